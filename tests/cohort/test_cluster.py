"""Tests of the kNN graphs, Leiden clustering and the uncorrected embedding (sccohort.cohort.cluster)
on the planted batch effect."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sccohort.cohort.cluster import (
    UNCORRECTED_NEIGHBORS,
    UNCORRECTED_UMAP,
    add_uncorrected,
    embed_uncorrected,
    integrate_and_cluster,
)
from sccohort.cohort.embed import embedding_table
from sccohort.errors import InputError
from sccohort.names import leiden_key

ARI_THRESHOLD = 0.5  # Leiden (default resolution 0.5) vs the 5 published types; observed ~0.57
SEED = 0


def test_leiden_key_formatting():
    assert [leiden_key(r) for r in (0.25, 0.5, 1, 1.0, 2, 0.1)] == [
        "leiden_0.25",
        "leiden_0.5",
        "leiden_1.0",
        "leiden_1.0",
        "leiden_2.0",
        "leiden_0.1",
    ]
    with pytest.raises(InputError):
        leiden_key(0)


def test_leiden_recovers_published_cell_types(clustered):
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    clustered = clustered.copy()  # the session's object stays as integrate_and_cluster left it
    key = leiden_key(0.5)
    assert clustered.uns["cohort"]["default_cluster_key"] == key
    for res in (0.25, 0.5, 1.0):
        assert leiden_key(res) in clustered.obs
    truth = clustered.obs["cell_type"].astype(str)
    ari = adjusted_rand_score(truth, clustered.obs[key])
    sc.tl.leiden(
        clustered,
        resolution=0.5,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=SEED,
        neighbors_key=UNCORRECTED_NEIGHBORS,
        key_added="leiden_uncorrected",
    )
    ari_uncorrected = adjusted_rand_score(truth, clustered.obs["leiden_uncorrected"])
    assert ari >= ARI_THRESHOLD
    assert ari >= ari_uncorrected + 0.15
    # B cells, the most distinct type, form one cluster of their own
    b_cluster = clustered.obs.loc[truth == "B", key].value_counts()
    assert b_cluster.iloc[0] / b_cluster.sum() > 0.95
    assert (clustered.obs[key] == b_cluster.index[0]).sum() < 1.05 * b_cluster.sum()


def test_clustered_object_contract(clustered):
    for key in ("X_pca", "X_pca_harmony", "X_umap", UNCORRECTED_UMAP):
        assert clustered.obsm[key].shape[0] == clustered.n_obs
    info = clustered.uns["cohort"]
    assert info["integrated_rep"] == "X_pca_harmony"
    assert clustered.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    assert "scanpy" in info["versions"] and "harmonypy" in info["versions"]
    table = embedding_table(clustered)
    assert list(table.columns[:3]) == ["barcode", "UMAP1", "UMAP2"]
    assert {"sample", "condition", "leiden_0.5"} <= set(table.columns)


def test_integration_none_skips_harmony(prepared):
    adata = prepared.copy()
    integrate_and_cluster(adata, options={"integration": "none", "leiden_resolutions": [0.5]}, seed=SEED)
    assert "X_pca_harmony" not in adata.obsm
    assert adata.uns["cohort"]["integration"] == "none"
    assert adata.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    assert adata.uns["cohort"]["uncorrected_neighbors_key"] == "neighbors"
    assert "leiden_0.5" in adata.obs


def test_uncorrected_embedding_in_its_own_job_equals_the_one_job_result(prepared, clustered):
    """cohort_uncorrected + cohort_cluster (uncorrected=False) give what one job computed before."""
    split = prepared.copy()
    integrate_and_cluster(split, options={}, seed=SEED, threads=2, uncorrected=False)
    assert UNCORRECTED_UMAP not in split.obsm
    assert f"{UNCORRECTED_NEIGHBORS}_distances" not in split.obsp
    # what cohort_uncorrected works on: the cell names and the PCs only
    alone = ad.AnnData(obs=pd.DataFrame(index=prepared.obs_names), obsm={"X_pca": prepared.obsm["X_pca"]})
    embed_uncorrected(alone, options={}, seed=SEED)
    add_uncorrected(split, alone)
    np.testing.assert_array_equal(split.obsm[UNCORRECTED_UMAP], clustered.obsm[UNCORRECTED_UMAP])
    for suffix in ("distances", "connectivities"):
        key = f"{UNCORRECTED_NEIGHBORS}_{suffix}"
        assert (split.obsp[key] != clustered.obsp[key]).nnz == 0
    np.testing.assert_array_equal(split.obsm["X_umap"], clustered.obsm["X_umap"])
    for key in clustered.uns["cohort"]["leiden_keys"]:
        assert (split.obs[key] == clustered.obs[key]).all()
    # an embedding of other cells (e.g. a stale file after a rerun of the merge) is refused
    with pytest.raises(InputError, match="cohort_uncorrected"):
        add_uncorrected(split, alone[::-1].copy())
