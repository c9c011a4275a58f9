"""The report's quality-control section: the per-sample QC table with links to each sample's
QC page, the cells kept per sample and every barcode's metrics against its thresholds."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from markupsafe import Markup

from ..pages import table_data
from .data import ReportData, ReportInputs
from .figures import figure_uri, plot_cells_kept, plot_qc_metrics
from .render import link, render
from .tables import qc_table, qc_warnings


def qc_page_link(page, report_dir: Path) -> Markup | str:
    """A link to a sample's QC page relative to the report's folder ("" without a page)."""
    if not page:
        return ""
    rel = os.path.relpath(Path(page), report_dir).replace(os.sep, "/")
    return link("/".join(quote(part) for part in rel.split("/")), "open")


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
    return render(
        "report_qc.html.j2",
        warnings=qc_warnings(data.thresholds),
        table=table_data(table, "qc-table"),
        searchable=len(table) > 12,
        cells_kept=figure_uri(plot_cells_kept(data.qc)),
        metrics=figure_uri(plot_qc_metrics(data.cells, data.thresholds, max_points, seed)),
    )
