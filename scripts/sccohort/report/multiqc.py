"""MultiQC custom content: the per-sample QC numbers as ``*_mqc.tsv`` files.

A core facility's MultiQC run over the results folder picks these up by their file names
(``*_mqc.tsv``) with no MultiQC configuration: each file starts with ``#`` comment lines holding
YAML (id, section name, plot type, column settings), followed by a TSV with one row per sample.

- sccohort_general_stats_mqc.tsv  (plot_type: generalstats) cells in, cells kept, median genes,
  median % mito, doublet rate: columns of MultiQC's General Statistics table.
- sccohort_qc_mqc.tsv             (plot_type: table) the full per-sample QC table.
- sccohort_cells_mqc.tsv          (plot_type: bargraph) barcodes kept / removed as doublets /
  failed QC thresholds (exclusive categories, so the bars add up to the cells in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..names import REMOVAL_REASONS

SECTION = "sccohort single-cell QC"

GENERAL_STATS = {
    "cells_in": {
        "title": "Cells in",
        "description": "Barcodes read from the count matrix",
        "format": "{:,.0f}",
        "scale": "Blues",
        "min": 0,
    },
    "cells_kept": {
        "title": "Cells kept",
        "description": "Cells passing QC thresholds and doublet removal (in filtered.h5ad)",
        "format": "{:,.0f}",
        "scale": "Greens",
        "min": 0,
    },
    "median_genes": {
        "title": "Median genes",
        "description": "Median genes detected per kept cell",
        "format": "{:,.0f}",
        "scale": "Purples",
        "min": 0,
    },
    "median_pct_mt": {
        "title": "% mito",
        "description": "Median % of counts from mitochondrial genes per kept cell",
        "suffix": "%",
        "format": "{:,.2f}",
        "scale": "OrRd",
        "min": 0,
        "max": 100,
    },
    "doublet_rate_pct": {
        "title": "% doublets",
        "description": "Predicted doublets among the cells passing the QC thresholds (Scrublet)",
        "suffix": "%",
        "format": "{:,.2f}",
        "scale": "OrRd",
        "min": 0,
        "max": 100,
    },
}

QC_TABLE = {
    "cells_in": ("Cells in", "{:,.0f}"),
    "cells_after_qc": ("After QC thresholds", "{:,.0f}"),
    "doublets": ("Predicted doublets", "{:,.0f}"),
    "cells_kept": ("Cells kept", "{:,.0f}"),
    "pct_kept": ("% kept", "{:,.1f}"),
    **{f"removed_{r}": (f"Removed: {r.replace('_', ' ')}", "{:,.0f}") for r in REMOVAL_REASONS},
    "median_counts": ("Median counts", "{:,.0f}"),
    "median_genes": ("Median genes", "{:,.0f}"),
    "median_pct_mt": ("Median % mito", "{:,.2f}"),
    "doublet_rate_pct": ("% doublets", "{:,.2f}"),
    "expected_doublet_rate_pct": ("Expected % doublets", "{:,.2f}"),
}

BAR_CATEGORIES = {
    "kept": {"name": "Kept", "color": "#2a9d58"},
    "removed_doublet": {"name": "Removed: doublet", "color": "#e07b00"},
    "failed_qc": {"name": "Removed: failed QC thresholds", "color": "#9a9a9a"},
}


def _yaml_header(header: Mapping) -> str:
    import yaml

    text = yaml.safe_dump(dict(header), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n" for line in text.splitlines())


def _value(value) -> str:
    """A TSV cell: integers as such, floats rounded, missing values empty (MultiQC skips them)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _tsv(frame: pd.DataFrame) -> str:
    lines = ["\t".join(["Sample", *map(str, frame.columns)])]
    for sample, row in frame.iterrows():
        lines.append("\t".join([str(sample), *(_value(v) for v in row.tolist())]))
    return "\n".join(lines) + "\n"


def general_stats(qc: pd.DataFrame) -> pd.DataFrame:
    """One row per sample (index) with the General Statistics columns."""
    return qc.set_index("sample")[list(GENERAL_STATS)]


def cell_categories(qc: pd.DataFrame) -> pd.DataFrame:
    """Exclusive barcode categories per sample: kept, removed as doublets, failed QC thresholds."""
    frame = qc.set_index("sample")
    return pd.DataFrame(
        {
            "kept": frame["cells_kept"],
            "removed_doublet": frame["cells_after_qc"] - frame["cells_kept"],
            "failed_qc": frame["cells_in"] - frame["cells_after_qc"],
        }
    ).astype(int)


def custom_content(qc: pd.DataFrame) -> dict[str, str]:
    """The three custom-content files as {file name: text}; `qc` is tables.qc_summary_table()."""
    general = _yaml_header(
        {
            "id": "sccohort_general_stats",
            "section_name": SECTION,
            "plot_type": "generalstats",
            "pconfig": [{column: settings} for column, settings in GENERAL_STATS.items()],
        }
    ) + _tsv(general_stats(qc))
    table_columns = [c for c in QC_TABLE if c in qc.columns]
    table = _yaml_header(
        {
            "id": "sccohort_qc_table",
            "section_name": f"{SECTION}: per-sample table",
            "description": "Cells at each QC step and the medians of the kept cells. A barcode failing "
            "two thresholds counts under both removal reasons.",
            "plot_type": "table",
            "pconfig": {"id": "sccohort_qc_table_plot", "title": "sccohort: per-sample QC"},
            "headers": {c: {"title": QC_TABLE[c][0], "format": QC_TABLE[c][1]} for c in table_columns},
        }
    ) + _tsv(qc.set_index("sample")[table_columns])
    bars = _yaml_header(
        {
            "id": "sccohort_cells",
            "section_name": f"{SECTION}: cells kept and removed",
            "description": "Barcodes per sample: kept, removed as doublets, removed by the QC thresholds.",
            "plot_type": "bargraph",
            "pconfig": {
                "id": "sccohort_cells_plot",
                "title": "sccohort: cells kept and removed",
                "ylab": "barcodes",
            },
            "categories": BAR_CATEGORIES,
        }
    ) + _tsv(cell_categories(qc))
    return {
        "sccohort_general_stats_mqc.tsv": general,
        "sccohort_qc_mqc.tsv": table,
        "sccohort_cells_mqc.tsv": bars,
    }


def write_custom_content(qc: pd.DataFrame, paths: Mapping[str, str | Path]) -> None:
    """Write the files; `paths` maps each file name of custom_content() to its destination."""
    from ..runtime import atomic_path

    for name, text in custom_content(qc).items():
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(text, encoding="utf-8")


def multiqc_command(files, outdir: str | Path, filename: str) -> list[str]:
    """An offline MultiQC run over exactly `files` (no version check, no AI toolbox)."""
    import sys

    return [
        sys.executable,
        "-m",
        "multiqc",
        "--no-version-check",
        "--no-ai",
        "--force",
        "--outdir",
        str(outdir),
        "--filename",
        filename,
        *map(str, files),
    ]
