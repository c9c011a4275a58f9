"""What the report reads: the paths of its inputs (ReportInputs) and the tables loaded from them.

Built from the small tables and figures the stages write (thresholds.json, cells.tsv.gz, the
cohort's UMAP coordinate tables, integration diagnostics, markers, annotation and composition
tables, DE tables), never from the cohort h5ad.

Required inputs (a missing one raises InputError naming it): per-sample thresholds.json and
cells.tsv.gz, the UMAP coordinate tables, integration_metrics.tsv, cluster_annotation.tsv and
composition.tsv. Everything else (figures, method agreement, DE) is optional: its absence is
shown as a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..runtime import read_table
from .tables import qc_summary_table

# The columns of cells.tsv.gz the report uses (the rest of the table is never read).
CELL_COLUMNS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "doublet_score", "qc_pass", "pass")
# Numeric columns of results/de/summary.tsv (read as text so group names stay as written).
DE_SUMMARY_NUMBERS = (
    "n_samples_test",
    "n_samples_reference",
    "n_cells_test",
    "n_cells_reference",
    "genes_tested",
    "up",
    "down",
)


@dataclass
class ReportInputs:
    """Paths of everything the report reads. Dicts are keyed by sample (QC) or contrast (DE)."""

    thresholds: dict[str, str]
    cells: dict[str, str]
    umap: str
    umap_uncorrected: str
    integration_metrics: str
    cluster_annotation: str
    composition: str
    qc_pages: dict[str, str] = field(default_factory=dict)
    merge_summary: str | None = None
    markers: str | None = None
    composition_by_condition: str | None = None
    missing_markers: str | None = None
    method_agreement: str | None = None
    # the annotation's labels per cluster and label, and per cell (cell_types.tsv.gz)
    cluster_composition: str | None = None
    cell_types: str | None = None
    cluster_dotplot: str | None = None
    celltype_dotplot: str | None = None
    composition_plot: str | None = None
    integration_plot: str | None = None
    de_summary: str | None = None
    de_dirs: dict[str, str] = field(default_factory=dict)
    composition_tests: dict[str, str] = field(default_factory=dict)  # contrast -> its .tsv (.png beside)
    de_metadata: str | None = None
    qc_summary: str | None = None

    REQUIRED = (
        "umap",
        "umap_uncorrected",
        "integration_metrics",
        "cluster_annotation",
        "composition",
    )

    def check(self) -> None:
        """Raise InputError for a missing required input (optional ones may be None or absent)."""
        if not self.thresholds:
            raise InputError("The report needs at least one sample's thresholds.json; none was given.")
        missing = set(self.thresholds) ^ set(self.cells)
        if missing:
            raise InputError(
                f"Samples {sorted(missing)} have thresholds.json but no cells.tsv.gz (or the reverse); "
                "re-run the QC stage for them."
            )
        paths = [
            (f"{name} of sample {s}", p)
            for name in ("thresholds", "cells")
            for s, p in getattr(self, name).items()
        ]
        paths += [(name, getattr(self, name)) for name in self.REQUIRED]
        for label, path in paths:
            if not path or not Path(path).is_file():
                raise InputError(
                    f"Required report input {label} not found: {path!r}. Run the stage that writes it "
                    "(snakemake builds it when you ask for results/report.html)."
                )


def optional_path(path) -> Path | None:
    """`path` as a Path if given and present, else None."""
    return Path(path) if path and Path(path).exists() else None


def read_tsv(path, **kwargs) -> pd.DataFrame:
    """A table a stage wrote, values as written (runtime.read_table: NA, None, null stay text)."""
    try:
        return read_table(path, **kwargs)
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read table {path}: {error}. Re-run the rule that writes it.") from None


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read {path}: {error}. Re-run the QC stage for this sample.") from None


def read_cells(path) -> pd.DataFrame:
    """The QC metrics of every barcode of one sample (cells.tsv.gz of the QC stage)."""
    cells = read_tsv(path, usecols=lambda c: c in CELL_COLUMNS)
    absent = [c for c in ("total_counts", "n_genes_by_counts", "pass") if c not in cells]
    if absent:
        raise InputError(f"{path} lacks column(s) {absent}; it must be the QC stage's cells.tsv.gz.")
    for column in ("pass", "qc_pass"):
        if column in cells:
            cells[column] = cells[column].astype(str).str.lower().isin(["true", "1"])
    if "qc_pass" not in cells:
        cells["qc_pass"] = cells["pass"]
    return cells


def read_de_summary(path) -> pd.DataFrame:
    """results/de/summary.tsv: text columns as written, the counts as numbers (NaN when empty)."""
    summary = read_tsv(path, dtype=str)
    for column in DE_SUMMARY_NUMBERS:
        if column in summary:
            summary[column] = pd.to_numeric(summary[column], errors="coerce")
    return summary


def read_de_table(path) -> pd.DataFrame:
    """One group's DE result table (gene names kept as text, even "NA"; empty numbers are NaN)."""
    return read_tsv(path)


@dataclass
class ReportData:
    """Everything read from the required inputs (tables only)."""

    qc: pd.DataFrame
    cells: dict[str, pd.DataFrame]
    thresholds: dict[str, dict]
    umap: pd.DataFrame
    umap_uncorrected: pd.DataFrame
    metrics: pd.DataFrame
    clusters: pd.DataFrame
    composition: pd.DataFrame
    cluster_key: str = ""
    annotation_key: str = ""


def load(inputs: ReportInputs) -> ReportData:
    """Check the required inputs and read them (cluster_key/annotation_key are left empty)."""
    inputs.check()
    thresholds = {s: read_json(p) for s, p in inputs.thresholds.items()}
    cells = {s: read_cells(inputs.cells[s]) for s in inputs.thresholds}
    qc = qc_summary_table(thresholds, cells)
    return ReportData(
        qc=qc,
        cells=cells,
        thresholds=thresholds,
        umap=read_tsv(inputs.umap),
        umap_uncorrected=read_tsv(inputs.umap_uncorrected),
        metrics=read_tsv(inputs.integration_metrics),
        clusters=read_tsv(inputs.cluster_annotation),
        composition=read_tsv(inputs.composition),
    )


def merge_warnings(merge_summary, qc: pd.DataFrame) -> list[str]:
    """A warning per sample merge_summary.tsv lists as dropped by QC that the QC table does not."""
    path = optional_path(merge_summary)
    if path is None:
        return []
    merge = read_tsv(path)
    if "dropped_by_qc" not in merge:
        return []
    dropped = merge.loc[merge["dropped_by_qc"].astype(str).str.lower() == "true", "sample"].tolist()
    known = set(qc.loc[qc["dropped"], "sample"])
    return [f"Sample {s} was not merged into the cohort (dropped by QC)." for s in dropped if s not in known]
