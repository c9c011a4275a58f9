"""Tests of normalisation, PCA and Harmony (sccohort.cohort.embed) on the merged planted cohort."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sccohort.cohort.embed import run_harmony, run_pca

SEED = 0


def test_prepared_object_contract(prepared, planted):
    adata = prepared
    assert adata.n_obs == 1200
    counts = adata.layers["counts"]
    assert sp.issparse(counts) and sp.issparse(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(counts.data, np.round(counts.data))
    totals = np.asarray(np.expm1(adata.X).sum(axis=1)).ravel()
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    for column in (
        "sample",
        "condition",
        "donor",
        "batch",
        "site",
        "total_counts",
        "pct_counts_mt",
        "doublet_score",
    ):
        assert column in adata.obs
    assert adata.var["highly_variable"].sum() == 2000
    flagged = adata.var["mt"] | adata.var["ribo"]
    assert flagged.sum() > 50 and not (adata.var["highly_variable"] & flagged).any()
    assert adata.obsm["X_pca"].shape == (1200, 50)
    assert adata.uns["cohort"]["parameters"]["n_top_genes"] == 2000
    assert set(adata.uns["qc_thresholds"]) == {"S0", "S1", "S2"}
    again = adata.copy()
    run_pca(again, n_comps=50, scale=False, seed=SEED)
    np.testing.assert_array_equal(again.obsm["X_pca"], adata.obsm["X_pca"])  # seeded, deterministic


def test_harmony_is_seeded_and_skips_single_level_keys(prepared):
    adata = prepared.copy()
    assert run_harmony(adata, batch_keys=["sample"], seed=SEED)
    first = adata.obsm["X_pca_harmony"].copy()
    assert run_harmony(adata, batch_keys=["sample"], seed=SEED)
    np.testing.assert_array_equal(first, adata.obsm["X_pca_harmony"])
    adata.obs["one"] = "x"
    del adata.obsm["X_pca_harmony"]
    assert not run_harmony(adata, batch_keys=["one"], seed=SEED)
    assert "X_pca_harmony" not in adata.obsm
