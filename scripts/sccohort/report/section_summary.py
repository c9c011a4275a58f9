"""The report's first section: warnings, an overview, cells at each step, samples, software,
input checksums and the configuration."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..pages import format_number, table_data
from .data import ReportData
from .render import render
from .tables import cells_per_step, final_cells_per_sample, natural_order


def config_yaml(config: Mapping) -> str:
    """The configuration as YAML (values YAML cannot represent as their text)."""
    import yaml

    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _shown(value):
    """Numbers as the report's tables show them (thousands separators), anything else as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return value


def overview(
    data: ReportData, steps: pd.DataFrame, sheet: pd.DataFrame | None, config: Mapping, created: str
) -> list[tuple[str, object]]:
    """(label, value) pairs of the run's overview table."""
    total = steps.iloc[-1]
    conditions = (
        sorted(sheet["condition"].astype(str).unique()) if sheet is not None and "condition" in sheet else []
    )
    pairs = [
        ("created", created),
        ("samples", f"{len(data.qc)} ({int(data.qc['dropped'].sum())} dropped by QC)"),
        ("conditions", ", ".join(conditions) or "-"),
        ("cells in", int(total["cells in"])),
        ("after QC thresholds", int(total["after QC thresholds"])),
        ("after doublet removal", int(total["after doublet removal"])),
        ("in the final object", int(total["in final object"])),
        ("clusters", data.umap[data.cluster_key].nunique() if data.cluster_key in data.umap else "-"),
        ("cell types (cells)", cell_type_counts(data)),
        ("results folder", config.get("results", "results")),
    ]
    return [(label, _shown(value)) for label, value in pairs]


def cell_type_counts(data: ReportData) -> str:
    """Every cell label with its cells ("B 751, CD4_T 1,203, ..."), from composition.tsv (the
    labels of the cells, not only those that win a cluster's majority); the cluster labels when
    the table has no counts."""
    table = data.composition
    if {"cell_type", "n_cells"} <= set(table.columns):
        totals = table.groupby(table["cell_type"].astype(str))["n_cells"].sum()
        return ", ".join(f"{label} {int(totals[label]):,}" for label in natural_order(totals.index))
    return ", ".join(natural_order(data.clusters["label"])) if "label" in data.clusters else "-"


def export_links(config: Mapping, report_dir: Path) -> list[dict[str, str]]:
    """The exports the run wrote (config export block; present in `report_dir`, which the rule
    ensures by taking them as inputs), with links relative to report.html (in the results folder):
    label, href and how to open it."""
    export = config.get("export") or {}
    links = []
    if export.get("cellbrowser", True):
        links.append(
            {
                "label": "UCSC Cell Browser",
                "href": "cellbrowser/index.html",
                "how": "interactive UMAP by cell type, cluster, sample and condition, with the cluster markers and "
                "any gene's expression; the page loads its data over HTTP: serve the results folder, e.g. "
                "python -m http.server --bind 127.0.0.1 -d results, and open http://localhost:8000/cellbrowser/",
            }
        )
    if export.get("cellxgene", True):
        links.append(
            {
                "label": "CELLxGENE export",
                "href": "export/cellxgene.h5ad",
                "how": "the annotated cohort in the CELLxGENE schema (cellxgene-schema validate accepts it), for "
                "CELLxGENE Discover or cellxgene launch",
            }
        )
    return [link for link in links if (report_dir / link["href"]).exists()]


def section_summary(
    data: ReportData,
    *,
    sheet: pd.DataFrame | None,
    config: Mapping,
    versions: Mapping[str, str],
    input_checksums: pd.DataFrame,
    warnings: Sequence[str],
    created: str,
    report_dir: Path,
) -> Markup:
    """The "Run summary" section; `warnings` are every section's, collected before this one."""
    final = final_cells_per_sample(data.composition, data.umap)
    steps = cells_per_step(data.qc, final, sheet)
    classes = [""] * (len(steps) - 1) + ["total"]
    samples = None
    if sheet is not None:
        samples = table_data(sheet if "sample" in sheet.columns else sheet.reset_index(), "sample-sheet")
    version_table = pd.DataFrame(sorted(versions.items()), columns=["package", "version"])
    return render(
        "report_summary.html.j2",
        warnings=list(warnings),
        overview=overview(data, steps, sheet, config, created),
        steps=table_data(steps, "cells-per-step", row_classes=classes),
        sheet=samples,
        sheet_searchable=sheet is not None and len(sheet) > 12,
        versions=table_data(version_table, "versions", sortable=False),
        checksums=table_data(input_checksums, "checksums"),
        config_text=config_yaml(config),
        exports=export_links(config, report_dir),
    )
