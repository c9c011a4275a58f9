"""Every configured annotation method on one AnnData (run_annotation): the marker method, the
optional CellTypist model and reference label transfer, their agreement per cluster and their
consensus per cell."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..names import score_column
from .cluster_table import cluster_annotation_table, cluster_top_genes, top_genes_from_markers
from .consensus import consensus_labels
from .marker_method import annotate_markers
from .marker_table import label_order, match_markers, parents_of
from .voting import method_agreement

LOG = logging.getLogger("sccohort")

# obs column of the labels of each method (the model-based methods' cluster majorities; their
# per-cell labels are in "<column>_cell")
LABEL_COLUMNS = {
    "markers": "cell_type",
    "celltypist": "cell_type_celltypist",
    "reference": "cell_type_reference",
    "consensus": "cell_type_consensus",
}


def run_annotation(
    adata,
    markers: pd.DataFrame,
    *,
    cluster_key: str,
    marker_path: str | Path = "marker table",
    celltypist_model: str | Path | None = None,
    reference: str | Path | None = None,
    reference_label_key: str = "cell_type",
    reference_n_neighbors: int = 15,
    min_vote_fraction: float = 0.0,
    consensus_min_agreement: float = 0.6,
    n_top_genes: int = 5,
    seed: int = 0,
    cluster_markers: pd.DataFrame | None = None,
    **marker_kwargs,
) -> dict:
    """All configured methods on `adata`, in place. Returns the tables to write: clusters,
    composition, missing, cells, levels and (when more than one method ran) agreement.

    `marker_kwargs`: annotate_markers' options (min_margin, min_score, unit_resolution, ...).
    Writes: what annotate_markers writes, annotate_celltypist's and annotate_reference's columns
    when their inputs are given, with more than one method obs["cell_type_consensus"] and
    obs["cell_type_consensus_agreement"] (consensus.consensus_labels), and uns["annotation"]
    (cluster_key, markers, the marker options, methods: method -> obs column of its labels,
    score_columns, confidence, levels).

    cluster_markers: cohort_markers' table for `cluster_key`; the clusters' top genes are taken
    from it instead of running the Wilcoxon test on X again (X may then hold the marker genes only).
    """
    out = annotate_markers(
        adata, markers, cluster_key=cluster_key, marker_path=marker_path, seed=seed, **marker_kwargs
    )
    methods = {"markers": LABEL_COLUMNS["markers"]}
    if celltypist_model:
        from .celltypist import annotate_celltypist

        votes = annotate_celltypist(
            adata, model_path=celltypist_model, cluster_key=cluster_key, min_fraction=min_vote_fraction
        )
        methods["celltypist"] = LABEL_COLUMNS["celltypist"]
        LOG.info("CellTypist majority labels:\n%s", votes.to_string(index=False))
    if reference:
        from .reference import annotate_reference

        votes = annotate_reference(
            adata,
            reference_path=reference,
            label_key=reference_label_key,
            cluster_key=cluster_key,
            min_fraction=min_vote_fraction,
            seed=seed,
            n_neighbors=reference_n_neighbors,
        )
        methods["reference"] = LABEL_COLUMNS["reference"]
        LOG.info("Reference majority labels:\n%s", votes.to_string(index=False))
    top = _top_genes(adata, cluster_markers, cluster_key=cluster_key, n_genes=n_top_genes)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    out["clusters"] = cluster_annotation_table(out["clusters"], top_genes=top, present_markers=present)
    if len(methods) > 1:
        out["agreement"] = _agreement(adata, markers, cluster_key=cluster_key, methods=methods)
        _consensus(adata, markers, methods=methods, min_agreement=consensus_min_agreement)
        methods["consensus"] = LABEL_COLUMNS["consensus"]
    out["cells"] = cells_table(adata, cluster_key)
    adata.uns["annotation"] = {
        "cluster_key": cluster_key,
        "markers": str(marker_path),
        **dict(marker_kwargs),
        "consensus_min_agreement": float(consensus_min_agreement),
        "methods": methods,
        "score_columns": [score_column(t) for t in dict.fromkeys(markers["cell_type"])],
        "confidence": "per cell: the lowest classifier probability of its label along the marker tree "
        "(1 where no classifier had to choose, 0 for Unknown)",
        "levels": out["levels"].astype(str).to_dict(orient="list"),
    }
    return out


def per_cell_column(method: str) -> str:
    """obs column of a method's per-cell labels (the marker method's labels are per cell)."""
    return LABEL_COLUMNS["markers"] if method == "markers" else f"{LABEL_COLUMNS[method]}_cell"


# columns of the per-cell table (cell_types.tsv.gz), where present
CELL_COLUMNS = (
    "cell_type_unit",
    "cell_type",
    "cell_type_lineage",
    "cell_type_confidence",
    "cell_type_agreement",
    "cell_type_celltypist_cell",
    "cell_type_reference_cell",
    "cell_type_consensus",
    "cell_type_consensus_agreement",
)


def cells_table(adata, cluster_key: str) -> pd.DataFrame:
    """The per-cell labels: the cohort's cell id (barcode, as in the UMAP tables), the cluster,
    the unit and every label column of CELL_COLUMNS present."""
    columns = [cluster_key] + [c for c in CELL_COLUMNS if c in adata.obs]
    table = adata.obs[columns].copy()
    table.insert(0, "barcode", adata.obs_names.to_numpy())
    return table.rename(columns={cluster_key: "cluster", "cell_type_unit": "unit"}).reset_index(drop=True)


def _consensus(adata, markers: pd.DataFrame, *, methods: Mapping[str, str], min_agreement: float) -> None:
    """Writes obs["cell_type_consensus"] (categorical) and obs["cell_type_consensus_agreement"]."""
    consensus = consensus_labels(
        {name: adata.obs[per_cell_column(name)] for name in methods},
        parents=parents_of(markers),
        min_agreement=min_agreement,
    )
    adata.obs["cell_type_consensus"] = pd.Categorical(
        consensus["label"], categories=label_order(markers, consensus["label"])
    )
    adata.obs["cell_type_consensus_agreement"] = consensus["agreement"].to_numpy(dtype=np.float32)


def _top_genes(
    adata, cluster_markers: pd.DataFrame | None, *, cluster_key: str, n_genes: int
) -> dict[str, list[str]]:
    """Each cluster's top genes: from cohort_markers' table when given, else tested on X (none
    when n_genes is 0)."""
    if not n_genes:
        return {}
    if cluster_markers is not None:
        return top_genes_from_markers(cluster_markers, n_genes=n_genes)
    return cluster_top_genes(adata, cluster_key=cluster_key, n_genes=n_genes)


def _agreement(adata, markers: pd.DataFrame, *, cluster_key: str, methods: Mapping[str, str]) -> pd.DataFrame:
    """method_agreement with each method's per-cell labels (the marker method's are obs cell_type)."""
    per_cell = {
        name: adata.obs[per_cell_column(name)] for name in methods if per_cell_column(name) in adata.obs
    }
    return method_agreement(
        adata, cluster_key=cluster_key, methods=methods, per_cell=per_cell, parents=parents_of(markers)
    )
