"""The report's integration section: UMAPs by sample and condition before and after the batch
correction, and the integration diagnostics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..pages import table_data
from ..plotting import palette
from .columns import column_notes
from .data import ReportData, ReportInputs
from .figures import figure_uri, plot_umap_grid, stage_figure_uri, subsample
from .links import FIGURE_SUFFIXES, file_links, folder_files
from .render import render
from .tables import natural_order


def integration_umaps(data: ReportData, *, integration: str, max_points: int, seed: int):
    """The UMAP grid: by sample and condition, before (uncorrected PCA) and after integration."""
    after = subsample(data.umap, max_points, seed)
    keys = [k for k in ("sample", "condition") if k in after]
    colours = {
        k: palette(natural_order(data.umap[k]) if k != "sample" else list(dict.fromkeys(data.qc["sample"])))
        for k in keys
    }
    panels = []
    if integration != "none":
        # the same (subsampled) cells in the uncorrected embedding
        before = data.umap_uncorrected.set_index("barcode").reindex(after["barcode"]).reset_index()
        before = before.dropna(subset=["UMAP1", "UMAP2"])
        panels += [(f"before integration (PCA): {k}", before, k) for k in keys]
        panels += [(f"after {integration}: {k}", after, k) for k in keys]
    else:
        panels += [(f"no integration: {k}", after, k) for k in keys]
    return plot_umap_grid(panels, colours, ncols=max(len(keys), 1))


SCIB_PREFIX = "scib_"


def scib_metrics_table(metrics: pd.DataFrame, columns) -> pd.DataFrame:
    """The scIB metrics of integration_metrics.tsv (its scib_* columns, on the "all" rows): one
    row per metric, one column per graph."""
    import pandas as pd

    overall = metrics[metrics["cluster"].astype(str) == "all"].set_index("graph")[list(columns)]
    if overall.empty or not columns:
        return pd.DataFrame()
    table = overall.T
    table.insert(0, "metric", [c[len(SCIB_PREFIX) :] for c in table.index])
    return table.reset_index(drop=True)


def integration_run(data: ReportData, config: Mapping) -> tuple[str, str | None]:
    """(the integration that ran, why none ran or None): the diagnostics hold a graph per
    integration that ran, so a Harmony the cohort stage skipped (every batch key has a single
    level, e.g. a one-sample pilot) is told apart from one that ran."""
    cohort = config.get("cohort", {})
    configured = cohort.get("integration", "harmony")
    if configured == "none":
        return "none", "cohort.integration is none"
    if configured in set(data.metrics["graph"].astype(str)):
        return configured, None
    keys = ", ".join(cohort.get("batch_keys") or ["sample"])
    return "none", (
        f"{configured} was skipped: every batch key (cohort.batch_keys: {keys}) has a single level in "
        "the merged cohort, so there is no batch to correct"
    )


def section_integration(
    data: ReportData,
    inputs: ReportInputs,
    *,
    config: Mapping,
    max_points: int,
    seed: int,
    report_dir: Path,
    warnings: list | None = None,
) -> Markup:
    """The "Integration" section; appends a skipped integration to `warnings`."""
    integration, not_run = integration_run(data, config)
    if not_run and warnings is not None and config.get("cohort", {}).get("integration") != "none":
        warnings.append(f"Integration: {not_run}.")
    fig = integration_umaps(data, integration=integration, max_points=max_points, seed=seed)
    metrics = data.metrics
    scib_columns = [c for c in metrics.columns if c.startswith(SCIB_PREFIX)]
    overall = metrics[metrics["cluster"].astype(str) == "all"].drop(columns=["cluster", *scib_columns])
    per_cluster = metrics[metrics["cluster"].astype(str) != "all"].drop(columns=scib_columns)
    scib = scib_metrics_table(metrics, scib_columns)
    return render(
        "report_integration.html.j2",
        integration=integration,
        not_run=not_run,
        max_points=max_points,
        n_cells=len(data.umap),
        seed=seed,
        umap=figure_uri(fig),
        overall=table_data(overall.round(4), "integration-overall"),
        per_cluster=table_data(per_cluster.round(4), "integration-clusters") if len(per_cluster) else None,
        scib=table_data(scib.round(4), "integration-scib", sortable=False) if len(scib) else None,
        plot_given=bool(inputs.integration_plot),
        plot=stage_figure_uri(inputs.integration_plot),
        notes=column_notes(metrics.columns),
        files=file_links(
            [
                inputs.integration_metrics,
                inputs.merge_summary,
                inputs.umap,
                inputs.umap_uncorrected,
                *folder_files(Path(inputs.integration_metrics).parent / "figures", FIGURE_SUFFIXES),
            ],
            report_dir,
        ),
    )
