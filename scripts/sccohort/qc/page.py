"""The self-contained HTML page of one sample's QC: its tables and the template that lays them out.

The page is templates/qc_sample.html.j2, built on the shared base and macros (sccohort.pages):
every value from the data (sample names, sources, warnings) is escaped by the template.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from .. import pages

TEMPLATES = Path(__file__).parent / "templates"


def qc_report_sample(
    *,
    cells_table: str,
    thresholds_json: str,
    sample: str,
    html: str,
    distributions_png: str,
    doublets_png: str,
    removed_png: str,
    log: logging.Logger,
) -> None:
    """Rule qc_report_sample: the QC page of one sample (`html`, figures inline) and its figures as PNGs."""
    from ..plotting import save_figure
    from ..runtime import atomic_path, read_table
    from . import figures

    cells = read_table(cells_table)
    thresholds = json.loads(Path(thresholds_json).read_text())
    drawn = {
        distributions_png: figures.plot_distributions(cells, thresholds["qc"]),
        doublets_png: figures.plot_doublet_scores(cells, thresholds["doublets"]),
        removed_png: figures.plot_removed(removal_counts(cells)),
    }
    for path, fig in drawn.items():
        save_figure(fig, path)
    uris = {
        "distributions": pages.file_data_uri(distributions_png),
        "doublets": pages.file_data_uri(doublets_png),
        "removed": pages.file_data_uri(removed_png),
    }
    with atomic_path(html) as tmp:
        tmp.write_text(render_sample_page(cells, thresholds, sample=sample, figures=uris), encoding="utf-8")
    log.info("wrote %s", html)


def removal_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells kept and removed by each reason (a cell failing two tests counts under both)."""
    reasons = cells["fail_reason"].fillna("").astype(str)
    rows = [("kept", int(cells["pass"].astype(bool).sum()))]
    counts = pd.Series([r for value in reasons for r in value.split(";") if r]).value_counts()
    rows += [(str(reason), int(n)) for reason, n in counts.items()]
    return pd.DataFrame(rows, columns=["category", "cells"])


def threshold_table(thresholds: dict) -> pd.DataFrame:
    """Each QC bound and the doublet-score threshold: its value and where it came from."""
    rows = []
    for metric in ("total_counts", "n_genes_by_counts", "pct_counts_mt"):
        entry = thresholds.get("qc", {}).get(metric, {})
        for bound in ("lower", "upper"):
            rows.append(
                {
                    "metric": metric,
                    "bound": bound,
                    "value": entry.get(bound),
                    "source": entry.get("skipped") or entry.get(f"{bound}_source", "none"),
                }
            )
    damaged = thresholds.get("qc", {}).get("damaged", {})
    if "n_mads_mt" in damaged:
        rows.append(
            {
                "metric": "damaged (vs neighbours)",
                "bound": "upper",
                "value": f"{damaged['n_mads_mt']:g} MADs (mito and counts) / {damaged['n_mads_mt_alone']:g} (mito)",
                "source": "config qc.n_mads_mt / qc.n_mads_mt_alone (or the sheet's n_mads_mt)",
            }
        )
    doublets = thresholds.get("doublets", {})
    if doublets.get("expected_rate") is not None:
        rows.append(
            {
                "metric": "expected doublet rate",
                "bound": "",
                "value": round(float(doublets["expected_rate"]), 4),
                "source": doublets.get("expected_rate_source", "none"),
            }
        )
    rows.append(
        {
            "metric": "doublet_score",
            "bound": "upper",
            "value": doublets.get("threshold"),
            "source": doublets.get("skipped") or doublets.get("threshold_source", "none"),
        }
    )
    return pd.DataFrame(rows)


def summary_table(cells: pd.DataFrame, thresholds: dict) -> pd.DataFrame:
    """Cells in, passing QC, doublets and kept; medians of the kept cells; the expected doublet rate."""
    status = thresholds.get("status", {})
    return pd.DataFrame(
        [
            ("cells in", status.get("n_cells_input")),
            ("cells passing QC thresholds", status.get("n_cells_after_qc")),
            ("predicted doublets", status.get("n_doublets")),
            ("cells kept", status.get("n_cells_kept")),
            ("median genes (kept)", _median(cells, "n_genes_by_counts")),
            ("median % mito (kept)", _median(cells, "pct_counts_mt")),
            ("expected doublet rate", thresholds.get("doublets", {}).get("expected_rate")),
        ],
        columns=["", "value"],
    )


def page_warnings(thresholds: dict) -> list[str]:
    """The sample's warnings: filters that removed a large share (thresholds.json "warnings"),
    dropped sample, skipped doublet calling, metric notes."""
    status = thresholds.get("status", {})
    removals = [
        w.get("message", str(w)) if isinstance(w, dict) else str(w) for w in thresholds.get("warnings") or []
    ]
    warnings = [w for w in (status.get("warning"), thresholds.get("doublets", {}).get("skipped")) if w]
    return removals + warnings + thresholds.get("notes", [])


def render_sample_page(cells: pd.DataFrame, thresholds: dict, *, sample: str, figures: dict[str, str]) -> str:
    """The self-contained QC page of one sample from its cells table and thresholds.json content;
    `figures` maps distributions, doublets and removed to a data URI."""
    pages.add_template_folder(TEMPLATES)
    return pages.render(
        "qc_sample.html.j2",
        title=f"QC of sample {sample}",
        subtitle="",
        table_script=False,
        warning_messages=page_warnings(thresholds),
        summary=pages.table_data(summary_table(cells, thresholds), sortable=False),
        thresholds=pages.table_data(threshold_table(thresholds), sortable=False),
        removed=pages.table_data(removal_counts(cells), sortable=False),
        figures=figures,
    )


def _median(cells: pd.DataFrame, metric: str):
    values = cells.loc[cells["pass"].astype(bool), metric].astype(float).dropna()
    return round(float(values.median()), 2) if len(values) else None
