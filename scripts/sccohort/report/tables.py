"""The report's numbers and tables, from the stages' tables (no HTML, no figures).

Shared by the HTML report and the MultiQC custom content (qc_summary_table).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..names import REMOVAL_REASONS, UNKNOWN, leiden_key
from ..pages import format_number

# Columns of cluster_annotation.tsv, marker and DE tables the report shows (in this order, where present).
CLUSTER_ANNOTATION_COLUMNS = (
    "cluster",
    "label",
    "labels",
    "lineage",
    "n_cells",
    "best_type",
    "score",
    "second_type",
    "margin",
    "cell_agreement",
    "mean_confidence",
    "top_markers",
    "reason",
)
# Columns of cluster_composition.tsv the report shows (one row per cluster and label).
CLUSTER_COMPOSITION_COLUMNS = (
    "cluster",
    "label",
    "n_cells",
    "fraction",
    "mean_confidence",
    "cell_agreement",
    "reason",
    "supporting_markers",
)
MARKER_COLUMNS = ("cluster", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_in", "pct_out")
DE_GENE_COLUMNS = (
    "gene",
    "log2FoldChange",
    "log2FoldChange_shrunk",
    "padj",
    "pvalue",
    "baseMean",
    "lfcSE",
    "stat",
)


# --------------------------------------------------------------------------------------------
# QC
# --------------------------------------------------------------------------------------------
def sample_qc_summary(thresholds: dict, cells: pd.DataFrame) -> dict:
    """One sample's QC numbers (shared by the report and the MultiQC files).

    cells_in: barcodes read; cells_after_qc: passing the QC thresholds; doublets: predicted among
    those; cells_kept: in filtered.h5ad (after doublet removal when doublets.action is remove);
    removed_<reason>: barcodes failing each test (a barcode failing two counts under both);
    medians over the kept cells; doublet_rate_pct: doublets / cells_after_qc (NaN when skipped).
    """
    status = thresholds.get("status", {})
    doublets = thresholds.get("doublets", {})
    kept = cells.loc[cells["pass"].astype(bool)]
    cells_in = int(status.get("n_cells_input", len(cells)))
    after_qc = int(status.get("n_cells_after_qc", int(cells["qc_pass"].sum())))
    n_doublets = int(status.get("n_doublets", 0))
    skipped = doublets.get("skipped")
    reasons = status.get("removed_by_reason", {}) or {}
    row = {
        "sample": str(thresholds.get("sample", status.get("sample", ""))),
        "cells_in": cells_in,
        "cells_after_qc": after_qc,
        "doublets": n_doublets,
        "cells_kept": int(status.get("n_cells_kept", len(kept))),
    }
    for reason in REMOVAL_REASONS:
        row[f"removed_{reason}"] = int(reasons.get(reason, 0))
    row["pct_kept"] = 100.0 * row["cells_kept"] / cells_in if cells_in else float("nan")
    row["median_counts"] = _median(kept, "total_counts")
    row["median_genes"] = _median(kept, "n_genes_by_counts")
    row["median_pct_mt"] = _median(kept, "pct_counts_mt")
    row["doublet_rate_pct"] = 100.0 * n_doublets / after_qc if after_qc and not skipped else float("nan")
    expected = doublets.get("expected_rate")
    row["expected_doublet_rate_pct"] = 100.0 * float(expected) if expected is not None else float("nan")
    row["doublets_skipped"] = str(skipped) if skipped else ""
    row["dropped"] = bool(status.get("dropped", False))
    return row


def _median(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return float("nan")
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def qc_summary_table(thresholds: Mapping[str, dict], cells: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row of sample_qc_summary() per sample, in the order of `thresholds`."""
    rows = [sample_qc_summary(thresholds[s], cells[s]) | {"sample": s} for s in thresholds]
    return pd.DataFrame(rows)


def warning_text(warning, sample: str) -> str:
    """One entry of thresholds.json["warnings"] (a message, or a dict with a "message" or with
    fields such as option and median) as text naming the sample."""
    if isinstance(warning, Mapping):
        text = str(warning.get("message") or "; ".join(f"{k}: {v}" for k, v in warning.items()))
    else:
        text = str(warning)
    return text if sample in text else f"Sample {sample}: {text}"


def qc_warnings(thresholds: Mapping[str, dict]) -> list[str]:
    """The QC stage's warnings (thresholds.json "warnings", e.g. a filter removing a large share;
    absent in older files), dropped samples, skipped doublet calling and notes, per sample."""
    messages = []
    for sample, info in thresholds.items():
        messages += [warning_text(w, sample) for w in info.get("warnings") or []]
        status = info.get("status", {})
        if status.get("warning"):
            messages.append(str(status["warning"]))
        elif status.get("dropped"):
            messages.append(f"Sample {sample} was dropped from the cohort (too few cells after QC).")
        skipped = info.get("doublets", {}).get("skipped")
        if skipped:
            messages.append(f"Sample {sample}: doublet calling skipped: {skipped}")
        for text in info.get("notes", []) or []:
            messages.append(f"Sample {sample}: {text}")
    return messages


def _conditions(samples: pd.Series, sheet: pd.DataFrame | None) -> pd.Series | None:
    if sheet is None or "condition" not in sheet:
        return None
    return samples.map(sheet["condition"].astype(str)).fillna("")


def qc_table(qc: pd.DataFrame, sheet: pd.DataFrame | None, links: Sequence) -> pd.DataFrame:
    """The report's per-sample QC table; `links` (one per sample) fill its "QC page" column."""
    table = pd.DataFrame({"sample": qc["sample"]})
    conditions = _conditions(table["sample"], sheet)
    if conditions is not None:
        table["condition"] = conditions
    table["cells in"] = qc["cells_in"]
    for reason in REMOVAL_REASONS:
        table[reason.replace("_", " ").replace("pct mt", "% mito")] = qc[f"removed_{reason}"]
    table["cells kept"] = qc["cells_kept"]
    table["% kept"] = qc["pct_kept"].round(1)
    table["median counts"] = qc["median_counts"].round(0)
    table["median genes"] = qc["median_genes"].round(0)
    table["median % mito"] = qc["median_pct_mt"].round(2)
    table["doublet rate %"] = qc["doublet_rate_pct"].round(2)
    table["expected doublet rate %"] = qc["expected_doublet_rate_pct"].round(2)
    table["QC page"] = list(links)
    table["status"] = [
        "dropped" if d else ("no doublet calling" if s else "ok")
        for d, s in zip(qc["dropped"], qc["doublets_skipped"], strict=True)
    ]
    return table


def final_cells_per_sample(composition: pd.DataFrame | None, umap: pd.DataFrame) -> pd.Series:
    """Cells per sample in the final object: composition.tsv when given, else the UMAP table."""
    if composition is not None and {"sample", "n_cells"} <= set(composition.columns):
        return composition.groupby("sample", sort=False)["n_cells"].sum().astype(int)
    return umap["sample"].astype(str).value_counts().astype(int)


def cells_per_step(qc: pd.DataFrame, final: pd.Series, sheet: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells of each sample at each step, with a total row."""
    table = pd.DataFrame({"sample": qc["sample"].astype(str)})
    conditions = _conditions(table["sample"], sheet)
    if conditions is not None:
        table["condition"] = conditions
    table["cells in"] = qc["cells_in"].to_numpy()
    table["after QC thresholds"] = qc["cells_after_qc"].to_numpy()
    table["predicted doublets"] = qc["doublets"].to_numpy()
    table["after doublet removal"] = qc["cells_kept"].to_numpy()
    table["in final object"] = table["sample"].map(final).fillna(0).astype(int).to_numpy()
    table["status"] = [
        "dropped (too few cells)" if d else ("doublet calling skipped" if s else "ok")
        for d, s in zip(qc["dropped"], qc["doublets_skipped"], strict=True)
    ]
    total = {c: (table[c].sum() if pd.api.types.is_numeric_dtype(table[c]) else "") for c in table.columns}
    total["sample"] = "total"
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def checksums(paths: Mapping[str, str], chunk: int = 1 << 20) -> pd.DataFrame:
    """md5 and sha256 of every input file; a directory (10x mtx) is checksummed file by file.

    A path that no longer exists is listed as 'not found' (the report records, it does not fail).
    """
    rows = []
    for label, path in paths.items():
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            files = [path]
        for file in files:
            name = str(file)
            if not file.is_file():
                rows.append((label, name, np.nan, "not found", "not found"))
                continue
            md5, sha = hashlib.md5(), hashlib.sha256()
            with open(file, "rb") as handle:
                while block := handle.read(chunk):
                    md5.update(block)
                    sha.update(block)
            rows.append((label, name, file.stat().st_size, md5.hexdigest(), sha.hexdigest()))
    return pd.DataFrame(rows, columns=["input", "file", "bytes", "md5", "sha256"])


# --------------------------------------------------------------------------------------------
# Clusters and cell types
# --------------------------------------------------------------------------------------------
def natural_order(values) -> list[str]:
    """Unique values as strings, numbers numerically first (cluster ids 0, 1, 2, ..., 10)."""
    unique = list(dict.fromkeys(str(v) for v in values))
    return sorted(unique, key=lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, v))


def _is_number(value: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))


def cluster_key_for(config: Mapping) -> tuple[str, str]:
    """(cohort default cluster column, annotation cluster column) from the config."""
    cohort = config.get("cohort", {})
    default = leiden_key(float(cohort.get("default_resolution", 0.5)))
    resolution = config.get("annotation", {}).get("resolution")
    annotation = leiden_key(float(resolution)) if resolution is not None else default
    return default, annotation


def cell_type_per_cell(
    umap: pd.DataFrame, clusters: pd.DataFrame, cluster_key: str, cells: pd.DataFrame | None = None
) -> pd.Series | None:
    """Each cell's label: its own from the annotation's per-cell table (`cells`, cell_types.tsv.gz:
    barcode -> cell_type) when given, else via its annotation cluster (cluster_annotation.tsv:
    cluster -> label).

    None when neither can be matched to the UMAP table (the figure is then skipped with a note).
    """
    if cells is not None and {"barcode", "cell_type"} <= set(cells.columns) and "barcode" in umap:
        label_of = dict(zip(cells["barcode"].astype(str), cells["cell_type"].astype(str), strict=True))
        return umap["barcode"].astype(str).map(label_of).fillna(UNKNOWN)
    if cluster_key not in umap or not {"cluster", "label"} <= set(clusters.columns):
        return None
    label_of = dict(zip(clusters["cluster"].astype(str), clusters["label"].astype(str), strict=True))
    return umap[cluster_key].astype(str).map(label_of).fillna(UNKNOWN)


def unknown_clusters(clusters: pd.DataFrame) -> list:
    """The clusters cluster_annotation.tsv labels Unknown."""
    if "label" not in clusters:
        return []
    return clusters.loc[clusters["label"] == UNKNOWN, "cluster"].tolist()


def cluster_counts(umap: pd.DataFrame, key: str, clusters: Sequence[str], samples: Sequence[str]):
    """Cells per cluster (rows, in `clusters` order) and sample (columns: `samples` first, then
    any other sample of the UMAP table)."""
    counts = pd.crosstab(umap[key].astype(str), umap["sample"].astype(str)).reindex(index=clusters)
    return counts.reindex(
        columns=[s for s in samples if s in counts.columns] + [c for c in counts.columns if c not in samples],
        fill_value=0,
    )


def cluster_sizes(counts: pd.DataFrame, key: str, annotation_key: str, clusters: pd.DataFrame):
    """The cluster-size table: total, cells per sample, the largest sample's share; the cell type
    of each cluster when the annotation used this clustering."""
    sizes = counts.copy()
    sizes.insert(0, "total", sizes.sum(axis=1))
    sizes["largest sample %"] = (100 * counts.max(axis=1) / counts.sum(axis=1).replace(0, np.nan)).round(1)
    sizes = sizes.reset_index().rename(columns={key: "cluster"})
    if key == annotation_key and {"cluster", "label"} <= set(clusters.columns):
        sizes.insert(
            1,
            "cell type",
            sizes["cluster"].map(dict(zip(clusters["cluster"], clusters["label"], strict=True))),
        )
    return sizes


def top_markers(markers: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The first `n` ranked markers of every cluster, in the report's columns."""
    top = markers[pd.to_numeric(markers["rank"], errors="coerce") <= n]
    return top[[c for c in MARKER_COLUMNS if c in top]]


def composition_by_sample(composition: pd.DataFrame, type_order: Sequence[str]) -> pd.DataFrame | None:
    """% of each sample's cells per cell type (samples x types, with the condition first), or None
    when composition.tsv has no fractions."""
    if not ({"sample", "cell_type", "fraction"} <= set(composition.columns) and len(composition)):
        return None
    present = set(composition["cell_type"])
    wide = composition.pivot_table(
        index="sample", columns="cell_type", values="fraction", sort=False
    ).reindex(columns=[t for t in type_order if t in present])
    wide = (100 * wide).round(1)
    if "condition" in composition:
        wide.insert(
            0,
            "condition",
            composition.drop_duplicates("sample").set_index("sample")["condition"].reindex(wide.index),
        )
    return wide.reset_index()


def composition_by_condition(table: pd.DataFrame) -> pd.DataFrame:
    """composition_by_condition.tsv with its fractions as percentages under readable names."""
    table = table.copy()
    for c in ("fraction_pooled", "mean_sample_fraction", "sd_sample_fraction"):
        if c in table:
            table[c] = (100 * pd.to_numeric(table[c], errors="coerce")).round(2)
    return table.rename(
        columns={
            "fraction_pooled": "% pooled",
            "mean_sample_fraction": "mean % of samples",
            "sd_sample_fraction": "SD % of samples",
        }
    )


# --------------------------------------------------------------------------------------------
# Differential expression
# --------------------------------------------------------------------------------------------
def top_de_genes(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n genes with the smallest adjusted p-value (then p-value, then largest |log2FC|)."""
    frame = table.copy()
    frame["_abs"] = -frame["log2FoldChange"].abs()
    frame = frame.sort_values(["padj", "pvalue", "_abs"], na_position="last", kind="stable")
    return frame.drop(columns="_abs").head(int(n)).reset_index(drop=True)


def de_summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The DE summary as shown: pseudobulk samples and cells as 'test / reference' pairs."""
    shown = summary[[c for c in ("contrast", "group", "status") if c in summary]].copy()

    def pair(kind: str) -> list[str]:
        test, reference = f"n_{kind}_test", f"n_{kind}_reference"
        if test not in summary or reference not in summary:
            return [""] * len(summary)
        return [
            f"{format_number(t)} / {format_number(r)}"
            for t, r in zip(summary[test], summary[reference], strict=True)
        ]

    shown["samples (test / ref.)"] = pair("samples")
    shown["cells (test / ref.)"] = pair("cells")
    for column in ("genes_tested", "up", "down", "reason"):
        if column in summary:
            shown[column.replace("_", " ")] = summary[column].to_numpy()
    return shown


def de_skipped_messages(summary: pd.DataFrame) -> list[str]:
    """A warning per group the DE stage did not test, with its reason."""
    skipped = summary[summary["status"] != "tested"]
    return [f"DE {r.contrast} / {r.group}: skipped: {r.reason}" for r in skipped.itertuples()]


def de_group_label(row) -> str:
    """The heading of one tested group: its up / down / tested gene counts."""

    def count(value) -> int:
        return int(value) if pd.notna(value) else 0

    return f"{row.group}: {count(row.up)} up, {count(row.down)} down of {count(row.genes_tested)} genes"
