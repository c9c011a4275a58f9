"""The `cohort:` config block: its defaults and their completion."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InputError

# Defaults of the `cohort:` config block (workflow/schemas/config.schema.yaml holds the same values;
# tests/cohort/test_merge.py checks that they agree).
DEFAULTS = {
    "join": "inner",
    "min_gene_overlap": 0.5,
    "min_cells_per_gene": 3,
    "target_sum": 10000,
    "n_top_genes": 2000,
    "hvg_flavor": "seurat_v3",
    "hvg_batch_key": "sample",
    "hvg_exclude_mt_ribo": True,
    "hvg_min_batch_cells": 50,
    "n_pcs": 50,
    "pca_scale": False,
    "integration": "harmony",
    "batch_keys": ["sample"],
    "harmony_theta": 2.0,
    "harmony_max_iter": 10,
    "n_neighbors": 15,
    "umap_min_dist": 0.5,
    "leiden_resolutions": [0.25, 0.5, 1.0],
    "default_resolution": 0.5,
    "n_marker_genes": 25,
    "marker_min_pct": 0.1,
}


def cohort_params(params: Mapping | None = None) -> dict:
    """The cohort config block completed with DEFAULTS."""
    merged = {**DEFAULTS, **dict(params or {})}
    if isinstance(merged["batch_keys"], str):
        merged["batch_keys"] = [merged["batch_keys"]]
    resolutions = [float(r) for r in merged["leiden_resolutions"]]
    if float(merged["default_resolution"]) not in resolutions:
        raise InputError(
            f"config: cohort.default_resolution {merged['default_resolution']} is not one of "
            f"cohort.leiden_resolutions {resolutions}; add it to the list or pick one of them."
        )
    return merged
