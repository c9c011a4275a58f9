"""Doublets per sample: planted doublets are found; small samples are skipped, not crashed; the rate."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sccohort.qc import doublets
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics import roc_auc_score

DOUBLET_CONFIG = {"min_cells": 200, "fallback_threshold": 0.25, "n_prin_comps": 30, "expected_rate": None}


@pytest.fixture(scope="module")
def planted(example_cells):
    """~1,000 real PBMCs plus 80 doublets made by summing two real cells from different clusters."""
    cells = example_cells("nCoV_PBMC_17", 1100, seed=3, clean_fraction=1.0)
    X = cells.X.tocsr()
    normalised = sp.diags(1e4 / np.asarray(X.sum(axis=1)).ravel()) @ X
    embedding = TruncatedSVD(20, random_state=0).fit_transform(normalised.log1p())
    # Coarse populations (T/NK, monocytes, B...) so that pairs are truly heterotypic.
    clusters = KMeans(5, n_init=4, random_state=0).fit_predict(embedding)
    rng = np.random.default_rng(1)
    pairs = []
    while len(pairs) < 80:
        a, b = rng.choice(X.shape[0], 2, replace=False)
        if clusters[a] != clusters[b]:
            pairs.append((a, b))
    doublet_rows = sp.vstack([X[a] + X[b] for a, b in pairs])
    used = np.unique(np.array(pairs).ravel())
    singlets = np.setdiff1d(np.arange(X.shape[0]), used)
    counts = sp.vstack([X[singlets], doublet_rows]).tocsr()
    truth = np.r_[np.zeros(len(singlets), bool), np.ones(len(pairs), bool)]
    return counts, truth


def test_planted_doublets_score_high(planted):
    counts, truth = planted
    adata, info = doublets.call_doublets(
        ad.AnnData(X=counts.copy()), doublet_options=DOUBLET_CONFIG, n_cells_recovered=counts.shape[0], seed=0
    )
    auroc = roc_auc_score(truth, adata.obs["doublet_score"])
    scrublet_auroc = roc_auc_score(truth, adata.obs["doublet_score_scrublet"])
    # Heterotypic doublets of real PBMCs: both parts see them; the consensus is not worse than Scrublet.
    assert auroc > 0.85 and auroc >= scrublet_auroc - 0.01, (auroc, scrublet_auroc)
    called = adata.obs["predicted_doublet"].to_numpy()
    # The "singlets" include the sample's own real doublets (~1-3%), so a few calls there are right.
    assert called[truth].mean() > 0.2
    assert called[~truth].mean() < 0.02
    assert info["method"] == "consensus" and "doublets.call_share" in info["threshold_source"]


def test_scrublet_method_keeps_the_automatic_threshold(planted):
    counts, truth = planted
    options = {**DOUBLET_CONFIG, "method": "scrublet"}
    adata, info = doublets.call_doublets(
        ad.AnnData(X=counts.copy()), doublet_options=options, n_cells_recovered=counts.shape[0], seed=0
    )
    assert info["threshold_source"].startswith(("automatic", "fallback"))
    assert roc_auc_score(truth, adata.obs["doublet_score"]) > 0.8
    np.testing.assert_array_equal(adata.obs["doublet_score"], adata.obs["doublet_score_scrublet"])


def test_same_seed_same_scores(planted):
    counts, truth = planted
    first, _ = doublets.call_doublets(
        ad.AnnData(X=counts.copy()), doublet_options=DOUBLET_CONFIG, n_cells_recovered=1000, seed=7
    )
    second, _ = doublets.call_doublets(
        ad.AnnData(X=counts.copy()), doublet_options=DOUBLET_CONFIG, n_cells_recovered=1000, seed=7
    )
    np.testing.assert_array_equal(first.obs["doublet_score"], second.obs["doublet_score"])


def test_expected_rate_follows_cells_recovered():
    assert doublets.expected_doublet_rate(1000) == pytest.approx(0.008)
    assert doublets.expected_doublet_rate(10_000) == pytest.approx(0.08)
    assert doublets.expected_doublet_rate(5) == doublets.MIN_EXPECTED_RATE


def test_small_sample_skipped_with_warning(planted):
    counts, _ = planted
    small = ad.AnnData(X=counts[:150].copy())
    small, info = doublets.call_doublets(small, doublet_options=DOUBLET_CONFIG, n_cells_recovered=150)
    assert "skipped" in info and "150 cells" in info["skipped"]
    assert small.obs["doublet_score"].isna().all()
    assert not small.obs["predicted_doublet"].any()


def test_overrides_of_expected_rate(planted):
    counts, _ = planted
    adata = ad.AnnData(X=counts[:400].copy())
    _, info = doublets.call_doublets(
        adata.copy(), doublet_options=DOUBLET_CONFIG, n_cells_recovered=400, expected_rate_override=0.1
    )
    assert info["expected_rate"] == 0.1 and "sample sheet" in info["expected_rate_source"]
    _, info = doublets.call_doublets(adata.copy(), doublet_options=DOUBLET_CONFIG, n_cells_recovered=400)
    assert info["expected_rate_formula"] == pytest.approx(0.0032)
    if info["expected_rate_used"] == "formula":
        assert info["expected_rate"] == pytest.approx(0.0032)
    else:
        assert info["expected_rate"] == pytest.approx(info["expected_rate_estimated"])
    _, info = doublets.call_doublets(
        adata.copy(), doublet_options={**DOUBLET_CONFIG, "expected_rate": 0.05}, n_cells_recovered=400
    )
    assert info["expected_rate"] == 0.05 and info["expected_rate_used"] == "config"


def test_rate_estimate_and_its_fallback():
    """Scrublet's detected / detectable when it has a threshold; else none, and choose_rate falls
    back to the 10x formula, saying why."""
    observed = np.r_[np.full(95, 0.05), np.full(5, 0.6)]
    simulated = np.r_[np.full(50, 0.1), np.full(50, 0.7)]
    rate, note = doublets.estimated_doublet_rate(observed, simulated, 0.4)
    assert rate == pytest.approx(0.05 / 0.5) and "50.0% of simulated" in note
    assert doublets.estimated_doublet_rate(observed, simulated, None)[0] is None
    assert doublets.estimated_doublet_rate(observed, np.full(100, 0.1), 0.4)[0] is None
    rate, source, kind = doublets.choose_rate({}, override=None, estimate=None, n_cells_recovered=5000)
    assert kind == "formula" and rate == pytest.approx(0.04) and "no usable data estimate" in source
    assert doublets.choose_rate({}, override=None, estimate=0.07, n_cells_recovered=5000)[2] == "data"


def test_scored_barcodes_reads_a_categorical_fail_reason():
    """Consensus scores QC-passing cells and cells failing only upper limits; fail_reason may be a
    categorical with missing values (every cell failing QC crashed here on fillna)."""
    import pandas as pd

    reasons = pd.Categorical([np.nan, "high_counts", "low_genes;high_counts", "high_genes;high_counts"])
    adata = ad.AnnData(
        sp.csr_matrix((4, 2), dtype=np.float32),
        obs=pd.DataFrame({"qc_pass": [True, False, False, False], "fail_reason": reasons}),
    )
    adata.obs_names = [f"c{i}" for i in range(4)]
    scored = doublets.scored_barcodes(adata, method="consensus")
    assert scored.tolist() == [True, True, False, True]
    assert doublets.scored_barcodes(adata, method="scrublet").tolist() == [True, False, False, False]
