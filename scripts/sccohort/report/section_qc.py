"""The report's quality-control section: the per-sample QC table with links to each sample's
QC page, the cells kept per sample, every barcode's metrics against its thresholds, and links to
the QC summary of all samples and to every sample's tables and figures."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from markupsafe import Markup

from ..pages import table_data
from .columns import column_notes
from .data import ReportData, ReportInputs
from .figures import figure_uri, plot_cells_kept, plot_qc_metrics
from .links import FIGURE_SUFFIXES, file_link, file_links, folder_files
from .render import link, render
from .tables import qc_table, qc_warnings

# Removal reasons shown only when some sample lost a cell to them (summary.tsv has them all).
OPTIONAL_REASON_COLUMNS = ("high genes", "high counts", "high pct other species")


def qc_page_link(page, report_dir: Path) -> Markup | str:
    """A link to a sample's QC page relative to the report's folder ("" without a page)."""
    if not page:
        return ""
    rel = os.path.relpath(Path(page), report_dir).replace(os.sep, "/")
    return link("/".join(quote(part) for part in rel.split("/")), "open")


def sample_files(inputs: ReportInputs, report_dir: Path) -> list[dict]:
    """Per sample: links to its QC page, cells.tsv.gz, thresholds.json and its figures."""
    rows = []
    for sample, thresholds in inputs.thresholds.items():
        page = inputs.qc_pages.get(sample)
        figures = folder_files(Path(thresholds).parent / "figures", FIGURE_SUFFIXES)
        rows.append(
            {
                "sample": sample,
                "links": file_links([page, inputs.cells.get(sample), thresholds, *figures], report_dir),
            }
        )
    return rows


def section_qc(
    data: ReportData,
    inputs: ReportInputs,
    *,
    sheet: pd.DataFrame | None,
    report_dir: Path,
    max_points: int,
    seed: int,
) -> Markup:
    """The "Quality control" section."""
    links = [qc_page_link(inputs.qc_pages.get(sample), report_dir) for sample in data.qc["sample"]]
    table = qc_table(data.qc, sheet, links)
    empty = [c for c in OPTIONAL_REASON_COLUMNS if c in table and not table[c].astype(float).any()]
    table = table.drop(columns=empty)
    summary = inputs.qc_summary
    summary_links = [file_link(summary, report_dir, "QC summary of all samples")] if summary else []
    if summary:
        summary_links.append(file_link(Path(summary).with_suffix(".tsv"), report_dir))
    return render(
        "report_qc.html.j2",
        warnings=qc_warnings(data.thresholds),
        table=table_data(table, "qc-table"),
        notes=column_notes(table.columns),
        hidden_reasons=empty,
        searchable=len(table) > 12,
        summary_links=[x for x in summary_links if x],
        sample_files=sample_files(inputs, report_dir),
        cells_kept=figure_uri(plot_cells_kept(data.qc)),
        metrics=figure_uri(plot_qc_metrics(data.cells, data.thresholds, max_points, seed)),
    )
