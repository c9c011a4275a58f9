"""Tests of the marker genes (sccohort.cohort.markers) on the clustered planted cohort."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sccohort.cohort.markers import (
    detection_by_group,
    find_markers,
    read_marker_genes,
    restrict_to_marker_genes,
)
from sccohort.errors import InputError
from sccohort.h5ad import read_gene_columns
from sccohort.names import leiden_key


def test_markers_of_known_types(clustered):
    key = leiden_key(0.5)
    markers = find_markers(clustered, groupby=key, n_genes=25)
    assert set(markers.columns) >= {
        "cluster",
        "rank",
        "gene",
        "gene_id",
        "logfoldchange",
        "pval_adj",
        "pct_in",
    }
    assert markers.groupby("cluster").size().max() == 25
    truth = clustered.obs["cell_type"].astype(str)
    b_cluster = clustered.obs.loc[truth == "B", key].value_counts().index[0]
    b_markers = markers[(markers["cluster"] == str(b_cluster)) & (markers["rank"] <= 10)]["gene"]
    assert {"MS4A1", "CD79A", "CD79B"} & set(b_markers)
    nk_cluster = clustered.obs.loc[truth == "NK", key].value_counts().index[0]
    nk_markers = markers[(markers["cluster"] == str(nk_cluster)) & (markers["rank"] <= 10)]["gene"]
    assert {"NKG7", "GNLY", "GZMB", "PRF1", "CST7", "GZMA"} & set(nk_markers)


def test_detection_by_group_counts_nonzero_cells():
    rng = np.random.default_rng(4)
    matrix = sp.random(53, 17, density=0.3, format="csr", random_state=5, dtype=np.float32)
    matrix.data[::7] = 0  # stored zeros are not detections
    codes = rng.integers(-1, 3, 53)  # -1: a cell in no group
    expected = np.stack([(matrix[codes == g].toarray() != 0).sum(axis=0) for g in range(3)])
    np.testing.assert_array_equal(detection_by_group(matrix, codes, 3, chunk_rows=10), expected)


def test_markers_min_pct_tests_only_detected_genes_and_keeps_their_statistics(clustered):
    key = leiden_key(0.5)
    every = find_markers(clustered, groupby=key, n_genes=clustered.n_vars)
    common = find_markers(clustered, groupby=key, n_genes=clustered.n_vars, min_pct=0.1)
    labels = clustered.obs[key]
    fraction = pd.DataFrame(
        {c: (clustered.X[(labels == c).to_numpy()] != 0).mean(axis=0).A1 for c in labels.cat.categories},
        index=clustered.var_names,
    )
    tested = set(common["gene"])
    assert tested == set(fraction.index[(fraction >= 0.1).any(axis=1)])
    assert 0 < len(tested) < clustered.n_vars  # the planted data has rare genes to leave out
    # a gene's Wilcoxon statistics do not depend on which other genes are tested
    merged = every.merge(common, on=["cluster", "gene"], suffixes=("", "_min_pct"))
    assert len(merged) == len(common)
    for column in ("score", "logfoldchange", "pval", "pct_in", "pct_out"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_min_pct"], rtol=1e-6, atol=1e-12)
    # adjusted p-values: Benjamini-Hochberg over the tested genes, per cluster
    from scipy.stats import false_discovery_control

    for _, table in common.groupby("cluster"):
        np.testing.assert_allclose(table["pval_adj"], false_discovery_control(table["pval"]), rtol=1e-6)
    # and the top markers of every cluster are the same genes
    top = lambda t: t[t["rank"] <= 10].groupby("cluster")["gene"].apply(list).to_dict()  # noqa: E731
    assert top(common) == top(every)


def test_markers_have_scanpys_wilcoxon_statistics(clustered):
    """illico's sparse Wilcoxon gives the numbers of scanpy's rank_genes_groups (tie_correct=False)."""
    import scanpy as sc

    key = leiden_key(0.5)
    ours = find_markers(clustered, groupby=key, n_genes=clustered.n_vars, threads=2)
    reference = clustered.copy()
    sc.tl.rank_genes_groups(
        reference, key, method="wilcoxon", reference="rest", use_raw=False, pts=True, tie_correct=False
    )
    theirs = sc.get.rank_genes_groups_df(reference, group=None)
    theirs["group"] = theirs["group"].astype(str)
    merged = ours.merge(theirs, left_on=["cluster", "gene"], right_on=["group", "names"], validate="1:1")
    assert len(merged) == len(ours) == clustered.n_vars * clustered.obs[key].nunique()
    for mine, scanpys in [
        ("score", "scores"),
        ("logfoldchange", "logfoldchanges"),
        ("pct_in", "pct_nz_group"),
        ("pct_out", "pct_nz_reference"),
    ]:
        np.testing.assert_allclose(merged[mine], merged[scanpys], rtol=1e-4, atol=1e-4, err_msg=mine)
    # p-values and their BH adjustment, compared on the log scale where they are tiny
    for mine, scanpys in [("pval", "pvals"), ("pval_adj", "pvals_adj")]:
        np.testing.assert_allclose(
            np.log10(np.maximum(merged[mine], 1e-300)),
            np.log10(np.maximum(merged[scanpys], 1e-300)),
            atol=1e-3,
            err_msg=mine,
        )
    top = ours[ours["rank"] <= 10].groupby("cluster")["gene"].apply(set).to_dict()
    scanpy_top = {
        str(group): set(reference.uns["rank_genes_groups"]["names"][str(group)][:10])
        for group in clustered.obs[key].cat.categories
    }
    assert top == scanpy_top


def test_read_marker_genes_reads_only_the_tested_genes(clustered, tmp_path):
    key = leiden_key(0.5)
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    read = read_marker_genes(path, min_pct=0.1, groupby=key, chunk_rows=97)
    restricted = restrict_to_marker_genes(clustered, groupby=key, min_pct=0.1)
    assert list(read.var_names) == list(restricted.var_names)
    assert read.n_vars < clustered.n_vars
    assert (read.X != restricted.X).nnz == 0
    pd.testing.assert_frame_equal(read.obs, restricted.obs)
    assert find_markers(read, groupby=key, n_genes=10).equals(
        find_markers(clustered, groupby=key, n_genes=10, min_pct=0.1)
    )


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_gene_columns_read_in_chunks_equal_the_matrix(tmp_path, dense):
    matrix = sp.random(57, 20, density=0.3, format="csr", random_state=3, dtype=np.float32)
    adata = ad.AnnData(X=matrix.toarray() if dense else matrix)
    adata.var_names = [f"g{i}" for i in range(20)]
    adata.write_h5ad(tmp_path / "x.h5ad")
    genes = ["g7", "g2", "g19", "g0"]
    columns = read_gene_columns(tmp_path / "x.h5ad", genes, chunk_rows=10)
    assert columns.shape == (57, 4)
    np.testing.assert_array_equal(columns.toarray(), matrix[:, [7, 2, 19, 0]].toarray())
    with pytest.raises(InputError, match="nope"):
        read_gene_columns(tmp_path / "x.h5ad", ["g1", "nope"])
