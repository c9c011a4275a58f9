"""Annotation units and the cell graph the annotation works on.

Labels are decided on units small enough to be pure, then reported at the clusters users see:
each cluster of the annotation resolution is split into sub-clusters (Leiden on the cluster's
own part of the cohort's kNN graph, the way scanpy's ``sc.tl.leiden(restrict_to=...)``
sub-clusters a group), and a sub-cluster smaller than ``min_cells`` is merged into the
sub-cluster it shares most graph weight with. Units are named ``<cluster>.<k>``; every unit lies
in one cluster.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

LOG = logging.getLogger("sccohort")

# Embeddings used, in this order, for the graph when the object has none and for the classifier.
EMBEDDINGS = ("X_pca_harmony", "X_pca")


def embedding_key(adata) -> str | None:
    """The obsm key of the cohort's (integrated) PCA embedding, or None when there is none."""
    return next((key for key in EMBEDDINGS if key in adata.obsm), None)


def cell_graph(adata, *, n_neighbors: int = 15) -> sp.csr_matrix:
    """The cohort's kNN graph: obsp["connectivities"] (symmetric, from the cohort stage), else an
    exact kNN graph (symmetrised, unit weights) on the PCA embedding; InputError when neither exists."""
    if "connectivities" in adata.obsp:
        graph = sp.csr_matrix(adata.obsp["connectivities"], dtype=np.float64)
    else:
        key = embedding_key(adata)
        if key is None:
            raise InputError(
                "The clustered object has neither obsp['connectivities'] nor a PCA embedding "
                f"({', '.join(EMBEDDINGS)}); re-run the cohort stage."
            )
        from sklearn.neighbors import kneighbors_graph

        k = int(min(n_neighbors, max(adata.n_obs - 1, 1)))
        graph = kneighbors_graph(np.asarray(adata.obsm[key]), k, mode="connectivity")
        graph = sp.csr_matrix(((graph + graph.T) > 0).astype(np.float64))
    graph = graph + graph.T
    graph.data /= 2.0
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def row_normalised(graph: sp.csr_matrix) -> sp.csr_matrix:
    """The graph with each row summing to 1 (rows without edges stay 0)."""
    sums = np.asarray(graph.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ graph)


def annotation_units(
    clusters: pd.Series, graph: sp.csr_matrix, *, resolution: float = 1.0, min_cells: int = 20, seed: int = 0
) -> np.ndarray:
    """Each cell's unit ("<cluster>.<k>"): the Leiden sub-clusters of its cluster (igraph flavour,
    2 iterations, seeded, as the cohort stage clusters), with sub-clusters under `min_cells`
    merged into their most connected neighbour; clusters under 2 x min_cells stay whole."""
    clusters = pd.Series(np.asarray(clusters, dtype=str))
    units = np.empty(len(clusters), dtype=object)
    for cluster in pd.unique(clusters):
        members = np.flatnonzero((clusters == cluster).to_numpy())
        if resolution <= 0 or len(members) < 2 * min_cells:
            units[members] = f"{cluster}.0"
            continue
        sub = graph[members][:, members]
        membership = _merge_small(sub, _leiden(sub, resolution=resolution, seed=seed), min_cells)
        units[members] = [f"{cluster}.{k}" for k in membership]
    return units


def _leiden(graph: sp.csr_matrix, *, resolution: float, seed: int) -> np.ndarray:
    """Leiden communities of a (sub)graph, numbered by decreasing size (scanpy's convention)."""
    import anndata as ad
    import scanpy as sc

    holder = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(graph.shape[0])]))
    sc.tl.leiden(
        holder,
        adjacency=graph,
        resolution=float(resolution),
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
        key_added="unit",
    )
    return holder.obs["unit"].astype(int).to_numpy()


def _merge_small(graph: sp.csr_matrix, membership: np.ndarray, min_cells: int) -> np.ndarray:
    """Merge communities smaller than `min_cells` (smallest first) into the community they share
    the most edge weight with (the largest one when they share none); renumber by size."""
    membership = membership.copy()
    while True:
        sizes = np.bincount(membership)
        alive = np.flatnonzero(sizes)
        small = [c for c in alive if sizes[c] < min_cells]
        if not small or len(alive) == 1:
            break
        community = min(small, key=lambda c: (sizes[c], c))
        indicator = sp.csr_matrix(
            (np.ones(len(membership)), (np.arange(len(membership)), membership)),
            shape=(len(membership), len(sizes)),
        )
        links = np.asarray((graph[membership == community] @ indicator).sum(axis=0)).ravel()
        links[community] = -1.0
        if links.max() <= 0:
            links = np.where(sizes > 0, sizes, -1).astype(float)
            links[community] = -1.0
        membership[membership == community] = int(links.argmax())
    order = pd.Series(membership).value_counts(sort=True)
    rank = {community: i for i, community in enumerate(sorted(order.index, key=lambda c: (-order[c], c)))}
    return np.array([rank[c] for c in membership], dtype=int)
