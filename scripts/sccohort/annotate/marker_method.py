"""The marker method (the default): per-cell marker scores, cell types decided per cell lineage
first (sccohort.annotate.hierarchy) on the annotation units, reported per cluster."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..names import score_column
from .cluster_table import cluster_composition, cluster_summary
from .hierarchy import TreeSettings, label_cells
from .marker_table import label_order, match_markers, missing_marker_report, resolve_marker_genes
from .scores import check_cluster_key, score_cells, supporting_markers
from .tree import marker_tree
from .units import annotation_units, cell_graph, embedding_key

LOG = logging.getLogger("sccohort")

# obs columns the marker method writes besides score_<type> (see annotate_markers)
OBS_COLUMNS = (
    "cell_type",
    "cell_type_lineage",
    "cell_type_confidence",
    "cell_type_unit",
    "cell_type_unit_label",
    "cell_type_own",
    "cell_type_agreement",
    "cell_type_reason",
)


def annotate_markers(
    adata,
    markers: pd.DataFrame,
    *,
    cluster_key: str,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    marker_path: str | Path = "marker table",
    unit_resolution: float = 1.0,
    min_unit_cells: int = 20,
    smoothing_steps: int = 2,
    smoothing_weight: float = 0.5,
    classifier: bool = True,
    min_training_cells: int = 10,
    min_probability: float = 0.0,
    n_pcs: int = 0,
    seed: int = 0,
) -> dict:
    """Marker-based cell types of every cell, reported at the clusters of ``obs[cluster_key]``.

    Writes: obs["score_<type>"] (whole-cohort score of each type of the table, float32),
    obs["cell_type"] (the cell's label, categorical in label_order), obs["cell_type_lineage"]
    (its lineage), obs["cell_type_confidence"] (float32, see hierarchy), obs["cell_type_unit"]
    (its annotation unit), obs["cell_type_unit_label"] (the unit's label), obs["cell_type_own"]
    (the label of its own smoothed scores), obs["cell_type_agreement"] (own label == unit
    label) and obs["cell_type_reason"] (why it has its label).

    Returns the tables: clusters (cluster_summary, one row per cluster), composition (one row per
    cluster and label, with supporting markers), missing (missing_marker_report), levels (one row
    per node of the tree decided). Raises InputError when no marker gene is in the data (naming
    `marker_path`) or `cluster_key` is not an obs column.
    """
    check_cluster_key(adata, cluster_key)
    markers = resolve_marker_genes(markers, adata.var_names)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    scores, constant = score_cells(adata, markers)
    missing = missing_marker_report(markers, adata.var_names, constant_genes=constant)
    for cell_type in scores.columns:
        adata.obs[score_column(cell_type)] = scores[cell_type].to_numpy()
    tree = marker_tree(markers)
    graph = cell_graph(adata)
    clusters = adata.obs[cluster_key].astype(str)
    units = annotation_units(clusters, graph, resolution=unit_resolution, min_cells=min_unit_cells, seed=seed)
    key = embedding_key(adata)
    settings = TreeSettings(
        min_score=min_score,
        min_margin=min_margin,
        smoothing_steps=smoothing_steps,
        smoothing_weight=smoothing_weight,
        classifier=classifier,
        min_training_cells=min_training_cells,
        min_probability=min_probability,
        n_pcs=n_pcs,
        seed=seed,
    )
    cells, levels = label_cells(
        adata,
        markers,
        tree,
        units=units,
        graph=graph,
        embedding=None if key is None else adata.obsm[key],
        settings=settings,
    )
    cells["unit"] = units
    _write_obs(adata, cells, markers)
    tables = _tables(adata, markers, cells, clusters)
    LOG.info(
        "Markers: %d of %d genes found in the data; %d absent, %d constant. %d units in %d clusters.",
        present["gene"].nunique(),
        markers["gene"].nunique(),
        markers["gene"].nunique() - present["gene"].nunique(),
        len(constant),
        len(set(units)),
        clusters.nunique(),
    )
    LOG.info("Decisions per node of the marker tree:\n%s", levels.to_string(index=False))
    return {**tables, "missing": missing, "levels": levels, "cells": cells}


def _write_obs(adata, cells: pd.DataFrame, markers: pd.DataFrame) -> None:
    """The per-cell columns of annotate_markers (categoricals in label_order)."""
    for column, source in (
        ("cell_type", "cell_type"),
        ("cell_type_unit_label", "unit_label"),
        ("cell_type_own", "own_label"),
    ):
        values = cells[source].astype(str)
        adata.obs[column] = pd.Categorical(values, categories=label_order(markers, values))
    lineage = cells["lineage"].astype(str)
    adata.obs["cell_type_lineage"] = pd.Categorical(lineage, categories=label_order(markers, lineage))
    adata.obs["cell_type_confidence"] = cells["confidence"].to_numpy(dtype=np.float32)
    adata.obs["cell_type_unit"] = pd.Categorical(cells["unit"].astype(str))
    adata.obs["cell_type_agreement"] = (cells["own_label"] == cells["unit_label"]).to_numpy()
    adata.obs["cell_type_reason"] = pd.Categorical(cells["reason"].astype(str))


def _tables(adata, markers, cells, clusters) -> dict:
    """The cluster summary and the composition with each (cluster, label)'s supporting markers."""
    order = label_order(markers, cells["cell_type"].astype(str))
    composition = cluster_composition(cells, clusters, order=order)
    keys = composition["cluster"] + "\t" + composition["label"]
    support = supporting_markers(
        adata,
        markers,
        groups=clusters.to_numpy() + "\t" + cells["cell_type"].astype(str).to_numpy(),
        type_of=dict(zip(keys, composition["label"], strict=True)),
    )
    composition["supporting_markers"] = keys.map(support).fillna("")
    summary = cluster_summary(composition, cells, clusters)
    summary["supporting_markers"] = summary["cluster"].map(
        composition.sort_values("n_cells", ascending=False, kind="stable")
        .drop_duplicates("cluster")
        .set_index("cluster")["supporting_markers"]
    )
    return {"clusters": summary, "composition": composition}
