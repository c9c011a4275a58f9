"""The report's clustering and annotation section: UMAPs by cluster and cell type, cluster sizes
per sample, the cell-type annotation, marker genes and the composition per sample and condition."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..errors import InputError
from ..pages import table_data
from ..plotting import palette
from .columns import column_notes
from .data import ReportData, ReportInputs, optional_path, read_tsv
from .figures import figure_uri, plot_cluster_sizes, plot_umap_grid, stage_figure_uri, subsample
from .links import FIGURE_SUFFIXES, file_links, folder_files
from .render import render
from .tables import (
    CLUSTER_ANNOTATION_COLUMNS,
    CLUSTER_COMPOSITION_COLUMNS,
    MARKER_COLUMNS,
    cell_type_per_cell,
    cluster_counts,
    cluster_sizes,
    composition_by_condition,
    composition_by_sample,
    natural_order,
    top_markers,
    unknown_clusters,
)


def cluster_column(data: ReportData, umap_path) -> str:
    """The cohort's default cluster column, or the first leiden_* column of the UMAP table when
    that one is absent."""
    if data.cluster_key in data.umap:
        return data.cluster_key
    leiden = [c for c in data.umap.columns if c.startswith("leiden_")]
    if not leiden:
        raise InputError(f"{umap_path} has no leiden_* column; re-run the cohort stage.")
    return leiden[0]


def cell_type_order(composition: pd.DataFrame, cell_types: pd.Series | None) -> list[str]:
    """Cell types in composition.tsv's order (the annotation stage's), then any other label."""
    order = list(dict.fromkeys(composition["cell_type"].astype(str))) if "cell_type" in composition else []
    if cell_types is not None:
        order += [t for t in natural_order(cell_types) if t not in order]
    return order


def umap_part(
    data: ReportData, *, cluster_key: str, cell_types, type_order: Sequence[str], max_points: int, seed: int
) -> dict:
    """The UMAP by cluster (labels at the centroids) and, when known, by cell type."""
    frame = data.umap.assign(cell_type=cell_types) if cell_types is not None else data.umap
    shown = subsample(frame, max_points, seed)
    colours = {cluster_key: palette(natural_order(data.umap[cluster_key]))}
    panels = [(f"Leiden clusters ({cluster_key})", shown, cluster_key)]
    if cell_types is not None:
        colours["cell_type"] = palette(list(type_order))
        panels.append(("cell type", shown, "cell_type"))
    fig = plot_umap_grid(panels, colours, ncols=2, legend={cluster_key: "centroids"})
    return {"figure": figure_uri(fig), "has_cell_types": cell_types is not None, "n_cells": len(data.umap)}


def sizes_part(data: ReportData, *, cluster_key: str) -> dict:
    """Cells per cluster stacked by sample (figure and table)."""
    clusters = natural_order(data.umap[cluster_key])
    samples = list(dict.fromkeys(data.qc["sample"]))
    counts = cluster_counts(data.umap, cluster_key, clusters, samples)
    sizes = cluster_sizes(counts, cluster_key, data.annotation_key, data.clusters)
    labels = dict(zip(sizes["cluster"], sizes["cell type"], strict=True)) if "cell type" in sizes else {}
    figure = figure_uri(plot_cluster_sizes(counts, palette(list(counts.columns)), labels=labels))
    return {
        "figure": figure,
        "table": table_data(sizes, "cluster-sizes"),
        "notes": column_notes(sizes.columns),
    }


def annotation_part(data: ReportData, inputs: ReportInputs, *, warnings: list) -> dict:
    """The cluster annotation table, the labels of each cluster's cells, the methods' agreement
    and the absent markers.

    Appends a warning about the clusters labelled Unknown to `warnings` (the run summary's).
    """
    found = []
    unknown = unknown_clusters(data.clusters)
    if unknown:
        found.append(
            f"{len(unknown)} cluster(s) labelled Unknown (no confident marker match): "
            f"{', '.join(map(str, unknown))}."
        )
        warnings.extend(found)
    clusters = data.clusters
    columns = [c for c in CLUSTER_ANNOTATION_COLUMNS if c in clusters]
    composition = optional_path(inputs.cluster_composition)
    composition_table = (
        read_tsv(composition, dtype={"cluster": str, "label": str}) if composition is not None else None
    )
    agreement = optional_path(inputs.method_agreement)
    missing = optional_path(inputs.missing_markers)
    missing_table = read_tsv(missing) if missing is not None else None
    return {
        "warnings": found,
        "notes": column_notes(columns),
        "table": table_data(clusters[columns], "cluster-annotation"),
        "searchable": len(clusters) > 15,
        "composition": (
            table_data(
                composition_table[[c for c in CLUSTER_COMPOSITION_COLUMNS if c in composition_table]],
                "cluster-composition",
            )
            if composition_table is not None and len(composition_table)
            else None
        ),
        "composition_notes": column_notes(CLUSTER_COMPOSITION_COLUMNS),
        "agreement": table_data(read_tsv(agreement), "method-agreement") if agreement is not None else None,
        "missing_markers": (
            table_data(missing_table, "missing-markers")
            if missing_table is not None and len(missing_table)
            else None
        ),
    }


def markers_part(inputs: ReportInputs) -> dict:
    """The stages' marker dot plots and the top markers of every cluster."""
    top = None
    markers = optional_path(inputs.markers)
    if markers is not None:
        table = read_tsv(markers)
        if len(table):
            top = table_data(top_markers(table, 10), "cluster-markers")
    return {
        "notes": column_notes(MARKER_COLUMNS),
        "celltype_dotplot": stage_figure_uri(inputs.celltype_dotplot),
        "cluster_dotplot": stage_figure_uri(inputs.cluster_dotplot),
        "top": top,
    }


def composition_part(data: ReportData, inputs: ReportInputs, *, type_order: Sequence[str]) -> dict:
    """The annotation stage's composition figure and the % per sample and per condition."""
    by_sample = composition_by_sample(data.composition, type_order)
    by_condition, notes = None, []
    path = optional_path(inputs.composition_by_condition)
    if path is not None:
        table = read_tsv(path)
        if len(table):
            shown = composition_by_condition(table)
            by_condition = table_data(shown, "composition-condition")
            notes = column_notes(shown.columns)
    return {
        "notes": notes,
        "figure": stage_figure_uri(inputs.composition_plot),
        "by_sample": table_data(by_sample, "composition-sample") if by_sample is not None else None,
        "by_condition": by_condition,
    }


def stage_files(inputs: ReportInputs, report_dir: Path) -> list[dict]:
    """Links to the annotation stage's tables and figures and the cohort's marker table."""
    folder = Path(inputs.cluster_annotation).parent
    tables = [
        inputs.cluster_annotation,
        inputs.cluster_composition,
        inputs.cell_types,
        inputs.composition,
        inputs.composition_by_condition,
        inputs.missing_markers,
        inputs.method_agreement,
        inputs.markers,
    ]
    return file_links([*tables, *folder_files(folder / "figures", FIGURE_SUFFIXES)], report_dir)


def section_clustering(
    data: ReportData, inputs: ReportInputs, *, max_points: int, seed: int, warnings: list, report_dir: Path
) -> Markup:
    """The "Clustering and annotation" section; appends its warnings to `warnings`."""
    cluster_key = cluster_column(data, inputs.umap)
    per_cell = optional_path(inputs.cell_types)
    cells = read_tsv(per_cell, dtype=str) if per_cell is not None else None
    cell_types = cell_type_per_cell(data.umap, data.clusters, data.annotation_key, cells)
    type_order = cell_type_order(data.composition, cell_types)
    return render(
        "report_clustering.html.j2",
        cluster_key=cluster_key,
        annotation_key=data.annotation_key,
        max_points=max_points,
        seed=seed,
        umap=umap_part(
            data,
            cluster_key=cluster_key,
            cell_types=cell_types,
            type_order=type_order,
            max_points=max_points,
            seed=seed,
        ),
        sizes=sizes_part(data, cluster_key=cluster_key),
        annotation=annotation_part(data, inputs, warnings=warnings),
        markers=markers_part(inputs),
        composition=composition_part(data, inputs, type_order=type_order),
        files=stage_files(inputs, report_dir),
    )
