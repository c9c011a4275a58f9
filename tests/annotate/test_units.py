"""Annotation units and the cell graph (sccohort.annotate.units)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from annotate.annotation_data import KEY
from sccohort.annotate.units import annotation_units, cell_graph, row_normalised


def test_units_split_clusters_and_stay_inside_them(pbmc4k):
    """Units are sub-clusters named <cluster>.<k>: each lies in one cluster, none is smaller than
    min_cells unless its cluster is under twice that, the same seed gives the same units, and a
    resolution of 0 gives the clusters themselves."""
    adata, _ = pbmc4k
    graph = cell_graph(adata)
    clusters = adata.obs[KEY].astype(str)
    units = pd.Series(annotation_units(clusters, graph, resolution=1.0, min_cells=20, seed=0))
    assert (units.str.split(".").str[0].to_numpy() == clusters.to_numpy()).all()
    assert units.nunique() > clusters.nunique()
    sizes = units.value_counts()
    big = clusters.value_counts()
    small_units = [u for u, n in sizes.items() if n < 20]
    assert all(big[u.split(".")[0]] < 40 for u in small_units), sizes
    again = annotation_units(clusters, graph, resolution=1.0, min_cells=20, seed=0)
    assert (units.to_numpy() == again).all()
    whole = annotation_units(clusters, graph, resolution=0, min_cells=20)
    assert (pd.Series(whole).str.split(".").str[0].to_numpy() == clusters.to_numpy()).all()
    assert pd.Series(whole).nunique() == clusters.nunique()


def test_cell_graph_from_the_embedding_when_the_object_has_none():
    """Without obsp["connectivities"] the graph is an exact symmetric kNN graph on the PCA."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(60)]))
    adata.obsm["X_pca"] = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(8, 1, (30, 5))])
    graph = cell_graph(adata, n_neighbors=5)
    assert (graph != graph.T).nnz == 0 and graph.diagonal().sum() == 0
    assert graph[:30, 30:].nnz == 0  # the two groups are not linked
    rows = np.asarray(row_normalised(graph).sum(axis=1)).ravel()
    assert np.allclose(rows, 1.0)
    assert sp.issparse(graph)
