"""QC thresholds: MADs on known distributions, fixed floors, per-sample overrides, samples without MT genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sccohort.errors import InputError
from sccohort.names import REMOVAL_REASONS
from sccohort.qc import fate, metrics

QC_CONFIG = {
    "mt_prefix": "auto",
    "ribo_prefixes": ["RPS", "RPL"],
    "hb_pattern": "^HB[ABDEGMQZ][0-9]?$",
    "n_mads_counts": 5,
    "n_mads_genes": 5,
    "n_mads_mt": 3,
    "min_counts": None,
    "min_genes": None,
    "max_genes": None,
    "max_pct_mt": None,
}


def test_mad_is_median_absolute_deviation_not_mean():
    # Skewed values: the median absolute deviation (1) differs from pandas' old mean absolute deviation.
    values = np.array([1, 2, 3, 4, 100], dtype=float)
    median, mad, low, high = metrics.mad_limits(values, 2)
    assert median == 3
    assert mad == 1
    mean_abs_dev = np.mean(np.abs(values - values.mean()))
    assert mad != pytest.approx(mean_abs_dev)
    assert (low, high) == (1, 5)


def test_mad_of_normal_sample_is_its_known_value():
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, 200_000)
    median, mad, _, _ = metrics.mad_limits(values, 3)
    # For a normal distribution the (unscaled) MAD is sigma * 0.6745.
    assert median == pytest.approx(10, abs=0.02)
    assert mad == pytest.approx(2 * 0.67449, rel=0.01)


def planted_obs(n_good=2000, seed=0):
    """Log-normal counts and genes for good cells, plus planted empty-ish, huge and dying cells."""
    rng = np.random.default_rng(seed)
    counts = np.exp(rng.normal(np.log(4000), 0.3, n_good))
    genes = counts * 0.35 * np.exp(rng.normal(0, 0.05, n_good))
    pct_mt = np.clip(rng.normal(4, 1, n_good), 0, None)
    obs = pd.DataFrame({"total_counts": counts, "n_genes_by_counts": genes, "pct_counts_mt": pct_mt})
    planted = pd.DataFrame(
        {
            "total_counts": [60, 80, 4000, 4000, 400_000],
            "n_genes_by_counts": [40, 50, 1400, 1400, 60_000],
            "pct_counts_mt": [3, 3, 40, 60, 3],
        },
        index=["low1", "low2", "mt1", "mt2", "huge"],
    )
    return pd.concat([obs.set_axis([f"c{i}" for i in range(n_good)]), planted])


def test_planted_outliers_fail_for_the_right_reason():
    obs = planted_obs()
    thresholds = metrics.compute_thresholds(obs, qc_options=QC_CONFIG)
    passed, reason = metrics.apply_thresholds(obs, thresholds)
    assert not passed[["low1", "low2", "mt1", "mt2", "huge"]].any()
    assert "low_counts" in reason["low1"] and "low_genes" in reason["low1"]
    assert reason["mt1"] == "high_pct_mt"
    assert "high_counts" in reason["huge"]
    good = obs.index.str.startswith("c")
    # 5 MADs (3.37 sigma) on a log-normal: almost no good cell fails on counts or genes (~0.08%);
    # 3 MADs on a normal mito % is 2.02 sigma one-sided, so ~2.2% of good cells fail on mito.
    size_failures = reason[good].str.contains("counts|genes").mean()
    mito_failures = reason[good].str.contains("pct_mt").mean()
    assert size_failures < 0.005
    assert 0.01 < mito_failures < 0.04
    assert thresholds["total_counts"]["lower_source"].startswith("adaptive")


def test_fixed_floor_wins_when_stricter_and_source_is_recorded():
    obs = planted_obs()
    config = {**QC_CONFIG, "min_counts": 3000, "max_pct_mt": 50}
    thresholds = metrics.compute_thresholds(obs, qc_options=config)
    assert thresholds["total_counts"]["lower"] == 3000
    assert thresholds["total_counts"]["lower_source"] == "config qc.min_counts"
    # The adaptive mito cap (about 4 + 3 MADs) is stricter than 50 and stays in force.
    assert thresholds["pct_counts_mt"]["upper"] < 50
    assert thresholds["pct_counts_mt"]["upper_source"].startswith("adaptive")
    passed, reason = metrics.apply_thresholds(obs, thresholds)
    assert (reason[obs["total_counts"] < 3000].str.contains("low_counts")).all()


def test_sample_sheet_overrides_take_precedence():
    obs = planted_obs()
    base = metrics.compute_thresholds(obs, qc_options={**QC_CONFIG, "max_pct_mt": 10})
    overridden = metrics.compute_thresholds(
        obs, qc_options={**QC_CONFIG, "max_pct_mt": 10}, overrides={"max_pct_mt": 50.0, "n_mads_mt": 20.0}
    )
    assert base["pct_counts_mt"]["upper"] <= 10
    assert overridden["pct_counts_mt"]["upper"] > base["pct_counts_mt"]["upper"]
    assert "sample sheet" in overridden["pct_counts_mt"]["upper_source"]
    wide = metrics.compute_thresholds(obs, qc_options=QC_CONFIG, overrides={"n_mads": 10.0})
    assert wide["total_counts"]["lower"] < base["total_counts"]["lower"]
    assert "n_mads" in wide["total_counts"]["lower_source"]


def make_adata(symbols, seed=0, n_cells=300):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(2.0, (n_cells, len(symbols))).astype(np.float32))
    var = pd.DataFrame({"gene_symbol": symbols, "gene_id": symbols}, index=symbols)
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"bc{i}" for i in range(n_cells)]), var=var)


def test_sample_without_mt_genes_skips_the_metric_and_records_it():
    adata = make_adata([f"GENE{i}" for i in range(50)] + ["RPS3", "HBB"])
    adata, thresholds = metrics.run_qc(adata, qc_options=QC_CONFIG)
    assert adata.obs["pct_counts_mt"].isna().all()
    assert "no mitochondrial genes" in thresholds["pct_counts_mt"]["skipped"]
    assert "pct_counts_mt" in adata.uns["qc_metric_notes"]
    assert adata.var.loc[["RPS3", "HBB"], ["ribo", "hb"]].to_numpy().tolist() == [
        [True, False],
        [False, True],
    ]
    expected_ribo = 100 * adata[:, "RPS3"].X.toarray().ravel() / adata.obs["total_counts"].to_numpy()
    np.testing.assert_allclose(adata.obs["pct_counts_ribo"], expected_ribo, rtol=1e-5)
    assert not adata.obs["fail_reason"].str.contains("mt").any()


def test_mouse_prefix_detected_and_top20_metric_present():
    adata = make_adata([f"Gene{i}" for i in range(50)] + ["mt-Co1", "mt-Nd1"])
    adata, _ = metrics.run_qc(adata, qc_options=QC_CONFIG)
    assert adata.uns["qc_metric_notes"]["mt_prefix"] == "mt-"
    assert adata.var["mt"].sum() == 2
    assert adata.obs["pct_counts_mt"].between(0, 100).all()
    assert "pct_counts_in_top_20_genes" in adata.obs


@pytest.mark.parametrize("n_genes", [4000, 15])
def test_top_genes_percent_is_the_share_of_the_largest_genes(n_genes):
    """scanpy's pct_counts_in_top_20_genes (percent_top=[20]: percent of a barcode's counts in
    its 20 largest genes), checked against a full sort of each dense row, on real cells, with a
    barcode without counts (NaN) and a sample with fewer genes than 20. Not against scanpy's own
    kernel: that is the parallel numba code top_genes_percent avoids, 30 s to compile."""
    from helpers import REPO

    cells = ad.read_h5ad(REPO / "tests" / "data" / "cohort" / "pbmc4k_1200cells_4000genes.h5ad")
    counts = sp.csr_matrix(cells.X)[:, :n_genes].tolil()
    counts[3] = 0
    counts = counts.tocsr()
    counts.eliminate_zeros()
    dense = counts.toarray().astype(np.float64)
    with np.errstate(invalid="ignore"):
        expected = 100 * np.sort(dense, axis=1)[:, ::-1][:, :20].sum(axis=1) / dense.sum(axis=1)
    ours = metrics.top_genes_percent(counts, n_top=20)
    assert np.isnan(ours[3]) and np.isnan(expected[3])
    np.testing.assert_allclose(ours, expected, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(metrics.top_genes_percent(dense, n_top=20), ours)
    assert (n_genes > 20) == (np.nanmax(ours) < 100)


def test_failed_sample_policy():
    adata = make_adata([f"GENE{i}" for i in range(30)] + ["MT-CO1"])
    adata.obs["qc_pass"] = False
    adata.obs["fail_reason"] = "low_counts"
    adata.obs["doublet_score"] = np.nan
    adata.obs["predicted_doublet"] = False
    with pytest.raises(InputError, match="Sample 'S1'.*failed_sample_policy"):
        fate.finalise_sample(
            adata.copy(),
            doublet_action="remove",
            min_cells_after_qc=20,
            failed_sample_policy="fail",
            sample="S1",
        )
    kept, table, status = fate.finalise_sample(
        adata.copy(),
        doublet_action="remove",
        min_cells_after_qc=20,
        failed_sample_policy="drop",
        sample="S1",
    )
    assert status["dropped"] and kept.n_obs == 0 and len(table) == adata.n_obs
    # every cell failed a threshold: the message says to loosen them; an input with fewer cells
    # than the minimum has nothing to loosen, and the message says to check the input instead
    for cells, advice in (
        (slice(None), "Loosen its thresholds"),
        (slice(5), "Its input holds too few cells"),
    ):
        with pytest.raises(InputError, match=advice):
            fate.finalise_sample(
                adata[cells].copy(),
                doublet_action="remove",
                min_cells_after_qc=20,
                failed_sample_policy="fail",
                sample="S1",
            )


def test_doublet_action_remove_versus_flag():
    adata = make_adata([f"GENE{i}" for i in range(30)])
    adata.obs["qc_pass"] = True
    adata.obs["fail_reason"] = ""
    adata.obs["doublet_score"] = 0.1
    adata.obs["predicted_doublet"] = np.arange(adata.n_obs) < 10
    kept, table, _ = fate.finalise_sample(
        adata.copy(),
        doublet_action="remove",
        min_cells_after_qc=1,
        failed_sample_policy="fail",
        sample="S1",
    )
    assert kept.n_obs == adata.n_obs - 10
    assert (table.loc[table["predicted_doublet"], "fail_reason"] == "doublet").all()
    flagged, table, _ = fate.finalise_sample(
        adata.copy(),
        doublet_action="flag",
        min_cells_after_qc=1,
        failed_sample_policy="fail",
        sample="S1",
    )
    assert flagged.n_obs == adata.n_obs and flagged.obs["predicted_doublet"].sum() == 10


def test_fail_reasons_join_in_the_shared_order():
    """fail_reason lists a cell's reasons in names.REMOVAL_REASONS order, the doublet last."""
    reasons = (
        set(metrics.FAIL_REASONS.values()) | set(metrics.NEIGHBOURHOOD_REASONS) | {metrics.DOUBLET_REASON}
    )
    assert reasons == set(REMOVAL_REASONS)
    assert REMOVAL_REASONS[-1] == metrics.DOUBLET_REASON
    obs = planted_obs()
    thresholds = metrics.compute_thresholds(obs, qc_options=QC_CONFIG)
    _, reason = metrics.apply_thresholds(obs, thresholds)
    assert reason["low1"] == "low_counts;low_genes"
    assert reason["huge"] == "high_counts;high_genes"
    adata = ad.AnnData(obs=obs.assign(qc_pass=reason == "", fail_reason=reason, doublet_score=0.5))
    adata.obs["predicted_doublet"] = adata.obs_names.isin(["low1", "c0"])
    _, table, _ = fate.finalise_sample(
        adata, doublet_action="remove", min_cells_after_qc=1, failed_sample_policy="fail", sample="S1"
    )
    table = table.set_index("barcode")
    assert table.loc["low1", "fail_reason"] == "low_counts;low_genes;doublet"
    assert table.loc["c0", "fail_reason"] == "doublet"
