"""sccohort.de.methods: the tests de.method chooses, on planted 3 vs 3 cohorts from real cells.

Cohorts (tests/de/planted.py): the Kang control cells (conftest.py) of each type pooled over
donors and dealt at random to 3 "trt" and 3 "ctrl" samples; each sample x gene gets a lognormal
factor (sd 0.5), 10% of the genes expressed in CD14+ Monocytes and in B cells get |log2FC| in
[1, 3] in the treated cells of that type; CD4 T cells get none. Cells -> pseudobulk -> test, as
the workflow does it.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from planted import observed_fdr_recall, planted_cohort
from sccohort.de import pseudobulk as pb
from sccohort.de import test as de
from sccohort.de.methods import independent_filter

ALPHA = 0.05
SEEDS = (0, 1, 2, 3)
CONTRAST = {"name": "trt_vs_ctrl", "factor": "condition", "test": "trt", "reference": "ctrl"}
PLANTED_TYPES = ("CD14+ Monocytes", "B cells")


@pytest.fixture(scope="module")
def cohorts(control_cells):
    """(pseudobulk counts, metadata, truth) of the planted cohort of each seed."""
    out = []
    for seed in SEEDS:
        cells, truth = planted_cohort(control_cells, seed=seed, planted_types=PLANTED_TYPES)
        counts, metadata = pb.pseudobulk(cells, group_by="cell_type", layer=None, covariates=["condition"])
        out.append((counts, metadata, truth))
    return out


def pooled(cohorts, settings: de.DESettings) -> dict:
    """Observed FDR and recall (planted |log2FC| >= 1) over every seed's cohort, and per seed."""
    totals = np.zeros(4, dtype=int)
    per_seed = []
    for counts, metadata, truth in cohorts:
        results, summary = de.run_contrast(
            counts, metadata, contrast=CONTRAST, settings=settings, log=logging.getLogger("test_methods")
        )
        assert (summary["method"] == settings.method).all()
        calls, false, found, planted = observed_fdr_recall(results, truth, alpha=ALPHA)
        totals += (calls, false, found, planted)
        per_seed.append((false / max(1, calls), found / max(1, planted)))
    calls, false, found, planted = totals
    return {"fdr": false / max(1, calls), "recall": found / planted, "calls": calls, "per_seed": per_seed}


def test_default_test_keeps_fdr_at_3_vs_3_and_beats_pydeseq2(cohorts):
    """Measured (seeds 0-5, this generator): limma_voom pooled FDR 0.063, recall 0.52; edger_ql
    0.071 / 0.54; PyDESeq2 defaults 0.139 / 0.60 (worst seed 0.22). Bars: the issue's (observed
    FDR <= 0.10 at padj < 0.05, recall >= 0.5) and FDR at least 0.04 below PyDESeq2's."""
    default = pooled(cohorts, de.DESettings())
    assert de.DESettings().method == "limma_voom"
    plain = pooled(cohorts, de.DESettings(method="pydeseq2"))
    assert default["fdr"] <= 0.10, default
    assert default["recall"] >= 0.5, default
    assert default["fdr"] <= plain["fdr"] - 0.04, (default, plain)


def test_edger_ql_maps_its_columns_onto_the_result_contract(cohorts):
    """edger_ql: logFC -> log2FoldChange, F -> stat, PValue -> pvalue, BH (after independent
    filtering) -> padj, lfcSE = |logFC| / sqrt(F); its FDR on the same cohorts stays near the bar."""
    counts, metadata, _ = cohorts[0]
    settings = de.DESettings(method="edger_ql")
    results, summary = de.run_contrast(counts, metadata, contrast=CONTRAST, settings=settings)
    table = results["CD14+ Monocytes"].table
    assert list(table.columns[:7]) == de.RESULT_COLUMNS
    assert (table["stat"] >= 0).all()
    np.testing.assert_allclose(table["lfcSE"], np.abs(table["log2FoldChange"]) / np.sqrt(table["stat"]))
    tested = table["padj"].notna()
    assert (table.loc[tested, "padj"] >= table.loc[tested, "pvalue"] - 1e-12).all()
    # baseMean is the mean of the per-level mean normalised counts (3 + 3 samples)
    np.testing.assert_allclose(table["baseMean"], (table["mean_norm_trt"] + table["mean_norm_ctrl"]) / 2)
    assert summary["method"].eq("edger_ql").all()
    assert pooled(cohorts[:2], settings)["fdr"] <= 0.15


def test_independent_filter_reproduces_pydeseq2(cohorts):
    """The filter applied to voom/edgeR p-values is PyDESeq2's: on PyDESeq2's own p-values and
    baseMean it gives PyDESeq2's padj."""
    counts, metadata, _ = cohorts[1]
    group = metadata.index[metadata["group"] == "CD14+ Monocytes"]
    genes = de.filter_genes(counts.loc[group], min_counts=10, min_samples=2)
    table, _ = de.run_deseq(
        counts.loc[group, genes],
        metadata.loc[group],
        design="~ condition",
        factor="condition",
        test="trt",
        reference="ctrl",
        alpha=ALPHA,
    )
    ours = independent_filter(table["pvalue"], table["baseMean"], alpha=ALPHA)
    np.testing.assert_allclose(ours, table["padj"].to_numpy(dtype=float), equal_nan=True)


def test_independent_filter_drops_low_counts_and_gains_calls():
    """Low-mean genes with no signal (uniform p) dilute BH; the filter leaves them out."""
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    base_mean = np.concatenate([rng.uniform(100, 1000, 300), rng.uniform(0.5, 5, 700)])
    pvalues = np.concatenate([rng.uniform(0, 1e-3, 60), rng.uniform(0, 1, 940)])
    filtered = independent_filter(pvalues, base_mean, alpha=ALPHA)
    plain = false_discovery_control(pvalues, method="bh")
    assert np.isnan(filtered[300:]).mean() > 0.25 and not np.isnan(filtered[:300]).any()
    assert (np.nan_to_num(filtered, nan=1) < ALPHA).sum() > (plain < ALPHA).sum()


def test_voom_moderated_t_matches_a_direct_computation(cohorts):
    """limma_voom's statistic is coefficient / (unscaled SD x posterior SD) with the posterior
    variance (prior df d0, prior s0^2) = (d0 s0^2 + d s^2) / (d0 + d): recomputed here from
    edgepython's voom and lmFit pieces, so the wiring (coefficient, weights, df) is checked."""
    import edgepython as ep
    from edgepython.limma_port import squeeze_var
    from edgepython.voom_lmfit import _lm_fit
    from sccohort.de.methods import effective_library_sizes, limma_voom

    counts, metadata, _ = cohorts[2]
    group = metadata.index[metadata["group"] == "B cells"]
    sub = counts.loc[group, de.filter_genes(counts.loc[group], min_counts=10, min_samples=2)]
    table = limma_voom(
        sub, metadata.loc[group], design="~ condition", factor="condition", test="trt", reference="ctrl"
    )
    X = np.column_stack([np.ones(6), (metadata.loc[group, "condition"] == "trt").to_numpy(float)])
    voom = ep.voom(sub.to_numpy(float).T, design=X, lib_size=effective_library_sizes(sub))
    fit = _lm_fit(voom["E"], X, weights=voom["weights"])
    prior = squeeze_var(fit.sigma**2, np.full(len(sub.columns), 4.0), robust=True)
    d0 = np.broadcast_to(np.asarray(prior["df_prior"], dtype=float), (len(sub.columns),))
    s0 = np.broadcast_to(np.asarray(prior["var_prior"], dtype=float), (len(sub.columns),))
    post = np.where(np.isinf(d0), s0, (np.where(np.isinf(d0), 0, d0) * s0 + 4 * fit.sigma**2) / (d0 + 4))
    expected = fit.coefficients[:, 1] / (fit.stdev_unscaled[:, 1] * np.sqrt(post))
    np.testing.assert_allclose(table["stat"].to_numpy(), expected, rtol=1e-6)
    assert pd.Series(table["pvalue"]).between(0, 1).all()
