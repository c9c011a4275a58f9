"""The cross-sample QC summary (rule qc_summary): every sample side by side, for tuning thresholds.

`snakemake qc` ends with results/qc/summary.html and summary.tsv: cells in, kept and removed per
reason, the thresholds each sample got (value, where it came from, the sample's median), the
warnings the per-sample stage stored in thresholds.json, and the same panels for every sample
(metric distributions with each sample's thresholds, the share of cells kept and removed).
Read from the files qc_sample and doublets_sample wrote; nothing is recomputed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import pages
from ..names import REMOVAL_REASONS

TEMPLATES = Path(__file__).parent / "templates"
# (metric in cells.tsv.gz and thresholds.json, label, unit of the median)
BOUNDED_METRICS = (
    ("total_counts", "counts", "counts"),
    ("n_genes_by_counts", "genes", "genes"),
    ("pct_counts_mt", "% mito", "%"),
    ("pct_counts_other_species", "% other species", "%"),
)
CELL_COLUMNS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "pass", "fail_reason")
# What each column of summary.tsv / the page's table means (shown under the table).
COLUMN_NOTES = {
    "cells_in": "barcodes in the input",
    "kept": "cells kept after QC thresholds and doublet removal",
    "pct_kept": "kept as % of cells_in",
    "removed_<reason>": "cells failing that test (a cell failing two tests counts under both)",
    "median_counts / median_genes / median_pct_mt": "medians over all input barcodes",
    "<metric> lower / upper": "threshold applied; in brackets the config or sheet option that set it "
    "(adaptive = median +/- MADs) and, for a fixed floor or cap, the sample's median",
    "doublet_threshold": "doublet score above which a cell is called a doublet (the consensus score with "
    "doublets.method consensus, Scrublet's score with scrublet; see each sample's thresholds.json)",
}


def qc_summary(
    *,
    thresholds_jsons: Sequence[str],
    cells_tables: Sequence[str],
    samples: Sequence[str],
    html: str,
    table: str,
    metrics_png: str,
    removed_png: str,
    log: logging.Logger,
) -> None:
    """Rule qc_summary: `table` (one row per sample) and the self-contained page `html`, with its
    two figures also as PNGs (`metrics_png`, `removed_png`)."""
    from ..plotting import save_figure
    from ..runtime import atomic_path, write_table
    from . import summary_figures

    records = {s: json.loads(Path(p).read_text()) for s, p in zip(samples, thresholds_jsons, strict=True)}
    cells = {s: read_cells(p) for s, p in zip(samples, cells_tables, strict=True)}
    frame = summary_frame(records, cells)
    write_table(frame, table)
    save_figure(summary_figures.plot_metric_panels(cells, records), metrics_png)
    save_figure(summary_figures.plot_kept_removed(cells), removed_png)
    warnings = all_warnings(records)
    for message in warnings:
        log.warning("%s", message)
    log.info(
        "QC summary of %d samples: %s of %s cells kept (%s)",
        len(samples),
        f"{int(frame['kept'].sum()):,}",
        f"{int(frame['cells_in'].sum()):,}",
        ", ".join(f"{s} {p:.0f}%" for s, p in zip(frame["sample"], frame["pct_kept"], strict=True)),
    )
    figures = {"metrics": pages.file_data_uri(metrics_png), "removed": pages.file_data_uri(removed_png)}
    with atomic_path(html) as tmp:
        tmp.write_text(render_summary_page(frame, warnings, figures=figures))
    log.info("wrote %s and %s", html, table)


def read_cells(path: str) -> pd.DataFrame:
    """The columns of one cells.tsv.gz the summary needs (pct_counts_other_species when present)."""
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    wanted = [c for c in (*CELL_COLUMNS, "pct_counts_other_species") if c in header]
    cells = pd.read_csv(path, sep="\t", usecols=wanted)
    cells["fail_reason"] = cells["fail_reason"].fillna("").astype(str)
    return cells


def warning_text(warning) -> str:
    """One entry of thresholds.json["warnings"] (a message, or a dict with one) as text."""
    if isinstance(warning, Mapping):
        if warning.get("message"):
            return str(warning["message"])
        return "; ".join(f"{k}: {v}" for k, v in warning.items())
    return str(warning)


def sample_warnings(record: Mapping) -> list[str]:
    """A sample's warnings from its thresholds.json: the "warnings" list (written by the QC stage
    when a filter removes a large share; absent in older files), a dropped sample, skipped
    doublet calling, metric notes. Each names the sample."""
    sample = record.get("sample", "?")
    found = [warning_text(w) for w in record.get("warnings") or []]
    status = record.get("status", {})
    found += [str(w) for w in (status.get("warning"), record.get("doublets", {}).get("skipped")) if w]
    found += [str(n) for n in record.get("notes") or []]
    return [w if sample in w else f"Sample {sample}: {w}" for w in found]


def all_warnings(records: Mapping[str, Mapping]) -> list[str]:
    return [w for record in records.values() for w in sample_warnings(record)]


def describe_bound(entry: Mapping, bound: str, unit: str) -> str:
    """'500 (qc.min_counts; median 520 counts)' or '260 (adaptive)': the value and what set it."""
    value = entry.get(bound)
    if entry.get("skipped"):
        return "skipped"
    if value is None:
        return ""
    source = str(entry.get(f"{bound}_source", ""))
    text = pages.format_number(value)
    if source.startswith("adaptive"):
        return f"{text} (adaptive)"
    option = source.replace("config ", "").replace("sample sheet column ", "sheet column ")
    median = entry.get("median")
    median_text = f"; median {pages.format_number(median)} {unit}" if median is not None else ""
    return f"{text} ({option}{median_text})"


def removal_counts(cells: pd.DataFrame) -> dict[str, int]:
    """Cells failing each reason (a cell failing two tests counts under both)."""
    reasons = pd.Series([r for value in cells["fail_reason"] for r in value.split(";") if r]).value_counts()
    return {reason: int(reasons.get(reason, 0)) for reason in REMOVAL_REASONS}


def summary_frame(records: Mapping[str, Mapping], cells: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """summary.tsv: one row per sample with cells in/kept, removals per reason, medians, thresholds."""
    rows = []
    for sample, record in records.items():
        table, status, qc = cells[sample], record.get("status", {}), record.get("qc", {})
        n_in = int(status.get("n_cells_input", len(table)))
        kept = int(status.get("n_cells_kept", table["pass"].astype(bool).sum()))
        row = {"sample": sample, "cells_in": n_in, "kept": kept, "pct_kept": 100 * kept / max(n_in, 1)}
        row.update({f"removed_{r}": n for r, n in removal_counts(table).items()})
        for metric, short in (
            ("total_counts", "counts"),
            ("n_genes_by_counts", "genes"),
            ("pct_counts_mt", "pct_mt"),
        ):
            values = table[metric].astype(float).dropna()
            row[f"median_{short}"] = float(values.median()) if len(values) else np.nan
        for metric, _, unit in BOUNDED_METRICS:
            if metric not in qc:
                continue
            for bound in ("lower", "upper"):
                row[f"{metric} {bound}"] = describe_bound(qc[metric], bound, unit)
        row["doublet_threshold"] = record.get("doublets", {}).get("threshold")
        row["dropped"] = bool(status.get("dropped", False))
        row["n_warnings"] = len(sample_warnings(record))
        rows.append(row)
    frame = pd.DataFrame(rows)
    empty = [
        c for c in frame.columns if c.endswith((" lower", " upper")) and (frame[c].fillna("") == "").all()
    ]
    return frame.drop(columns=empty)


def render_summary_page(frame: pd.DataFrame, warnings: Sequence[str], *, figures: Mapping[str, str]) -> str:
    """The self-contained summary page; `figures` maps metrics and removed to data URIs."""
    pages.add_template_folder(TEMPLATES)
    counts = frame[
        ["sample", "cells_in", "kept", "pct_kept"] + [c for c in frame if c.startswith("removed_")]
    ]
    counts = counts.rename(columns=lambda c: c.replace("removed_", "") if c.startswith("removed_") else c)
    if "pct_counts_other_species upper" not in frame and not counts["high_pct_other_species"].any():
        counts = counts.drop(columns="high_pct_other_species")  # no species check configured
    links = [pages.render_string('<a href="{{ s }}/report.html">{{ s }}</a>', s=s) for s in frame["sample"]]
    counts = counts.assign(sample=links)
    bounds = frame[
        ["sample"] + [c for c in frame if c.startswith("median_") or c.endswith((" lower", " upper"))]
    ]
    bounds = pd.concat([bounds, frame[["doublet_threshold"]]], axis=1)
    return pages.render(
        "qc_summary.html.j2",
        title="QC summary: all samples",
        subtitle=f"{len(frame)} samples, {int(frame['kept'].sum()):,} of {int(frame['cells_in'].sum()):,} cells kept",
        table_script=True,
        warning_messages=list(warnings),
        counts=pages.table_data(counts, "qc-summary-counts", float_formats={"pct_kept": "{:.1f}"}),
        bounds=pages.table_data(bounds, "qc-summary-thresholds"),
        column_notes=COLUMN_NOTES,
        figures=figures,
    )
