"""The tests de.method can choose besides PyDESeq2: limma-voom and edgeR's quasi-likelihood F-test.

Both come from edgepython (a Python port of edgeR and of the limma functions edgeR uses) and
share the normalisation: TMM library sizes (Robinson & Oshlack, Genome Biol 2010).

* ``limma_voom`` (the default): voom's log2-CPM with precision weights from the mean-variance
  trend (Law et al., Genome Biol 2014), a weighted linear model per gene, and limma's robust
  empirical-Bayes moderated t (Smyth 2004; Phipson et al., Ann Appl Stat 2016) on the residual
  plus the prior degrees of freedom. Sample-to-sample (donor) variation of a gene is close to
  lognormal; on the log scale the moderated t keeps its nominal error rate at 3 vs 3, where the
  negative-binomial tests (PyDESeq2's Wald test, edgeR's QL F-test) are anti-conservative in the
  tail (measured: README of the DE stage).
* ``edger_ql``: glmQLFit(robust=TRUE) and glmQLFTest (Lund et al. 2012; Chen et al. 2016/2024).

Both then take DESeq2's independent filtering (Bourgon et al., PNAS 2010; Love et al. 2014) on
the mean of normalised counts when de.independent_filtering is on, and Benjamini-Hochberg.
Columns map onto PyDESeq2's: log2FoldChange (voom: the coefficient on the log2-CPM scale; edgeR:
logFC), lfcSE (voom: its moderated standard error; edgeR: |logFC| / sqrt(F), the error implied by
the 1-df F statistic), stat (voom: moderated t; edgeR: F), pvalue, padj, baseMean (mean
normalised count: counts over TMM size factors scaled to geometric mean 1). Deterministic.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .design import design_matrix

METHODS = {
    "limma_voom": "limma-voom: voom weights, robust empirical-Bayes moderated t (edgepython)",
    "edger_ql": "edgeR quasi-likelihood F-test, glmQLFit(robust=TRUE) (edgepython)",
    "pydeseq2": "PyDESeq2 Wald test (parametric dispersion trend, Cooks filtering)",
}


def effective_library_sizes(counts: pd.DataFrame) -> np.ndarray:
    """Per sample (rows of counts): library size x TMM normalisation factor (edgeR's calcNormFactors)."""
    import edgepython as ep

    dge = ep.calc_norm_factors(ep.make_dgelist(counts.to_numpy(dtype=float).T))
    return dge["samples"]["lib.size"].to_numpy(float) * dge["samples"]["norm.factors"].to_numpy(float)


def tmm_size_factors(counts: pd.DataFrame) -> np.ndarray:
    """Effective library sizes scaled to geometric mean 1 (the analogue of DESeq2's size factors)."""
    effective = effective_library_sizes(counts)
    return effective / np.exp(np.mean(np.log(effective)))


def independent_filter(pvalues: np.ndarray, base_mean: np.ndarray, *, alpha: float) -> np.ndarray:
    """BH-adjusted p-values after DESeq2's independent filtering, as PyDESeq2 does it.

    Genes below a baseMean quantile are left out of the adjustment (their padj is NaN); the
    quantile (of 50 between the share of all-zero genes and 0.95) is the first whose number of
    rejections at alpha is within one residual SD of the lowess-smoothed maximum.
    """
    from scipy.stats import false_discovery_control
    from statsmodels.nonparametric.smoothers_lowess import lowess

    pvalues, base_mean = np.asarray(pvalues, dtype=float), np.asarray(base_mean, dtype=float)
    lower = float(np.mean(base_mean == 0))
    theta = np.linspace(lower, 0.95 if lower < 0.95 else 1.0, 50)
    adjusted = np.full((len(pvalues), len(theta)), np.nan)
    for i, cutoff in enumerate(np.quantile(base_mean, theta)):
        use = (base_mean >= cutoff) & ~np.isnan(pvalues)
        if use.any():
            adjusted[use, i] = false_discovery_control(pvalues[use], method="bh")
    rejections = (np.nan_to_num(adjusted, nan=1.0) < alpha).sum(axis=0)
    chosen = 0
    if rejections.max() > 10:
        fitted = lowess(rejections, theta, frac=1 / 5, return_sorted=False)
        residual = rejections[rejections > 0] - fitted[rejections > 0]
        above = np.flatnonzero(rejections > fitted.max() - np.sqrt(np.mean(residual**2)))
        chosen = int(above[0]) if len(above) else 0
    return adjusted[:, chosen]


def _design(counts, metadata, *, design, factor, test, reference) -> tuple[np.ndarray, int]:
    matrix = design_matrix(
        metadata.loc[counts.index], design=design, factor=factor, test=test, reference=reference
    )
    return np.asarray(matrix, dtype=float), list(matrix.columns).index(f"{factor}[T.{test}]")


def limma_voom(
    counts: pd.DataFrame, metadata: pd.DataFrame, *, design, factor, test, reference
) -> pd.DataFrame:
    """voom + lmFit + robust eBayes for the contrast coefficient; genes as rows of the result
    (log2FoldChange, lfcSE, stat, pvalue, df_total)."""
    import edgepython as ep
    from edgepython.limma_port import squeeze_var
    from edgepython.voom_lmfit import _lm_fit
    from scipy.stats import t as t_dist

    X, j = _design(counts, metadata, design=design, factor=factor, test=test, reference=reference)
    size = effective_library_sizes(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        voom = ep.voom(counts.to_numpy(dtype=float).T, design=X, lib_size=size)
        fit = _lm_fit(voom["E"], X, weights=voom["weights"])
        df_residual = np.asarray(fit.df_residual, dtype=float)
        squeezed = squeeze_var(fit.sigma**2, df_residual, robust=True)
    se = fit.stdev_unscaled[:, j] * np.sqrt(np.asarray(squeezed["var_post"], dtype=float))
    df_total = df_residual + np.broadcast_to(np.asarray(squeezed["df_prior"], dtype=float), df_residual.shape)
    stat = fit.coefficients[:, j] / se
    return pd.DataFrame(
        {
            "log2FoldChange": fit.coefficients[:, j],
            "lfcSE": se,
            "stat": stat,
            "pvalue": 2 * t_dist.sf(np.abs(stat), np.minimum(df_total, 1e6)),
            "df_total": df_total,
        },
        index=counts.columns,
    )


def edger_ql(
    counts: pd.DataFrame, metadata: pd.DataFrame, *, design, factor, test, reference
) -> pd.DataFrame:
    """edgeR glmQLFit(robust=TRUE) + glmQLFTest of the contrast coefficient (TMM)."""
    import edgepython as ep

    X, j = _design(counts, metadata, design=design, factor=factor, test=test, reference=reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dge = ep.calc_norm_factors(ep.make_dgelist(counts.to_numpy(dtype=float).T))
        fit = ep.glm_ql_fit(dge, design=X, robust=True)
        table = ep.glm_ql_ftest(fit, coef=j)["table"]
    lfc, f_stat = table["logFC"].to_numpy(float), table["F"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.abs(lfc) / np.sqrt(f_stat)
    return pd.DataFrame(
        {"log2FoldChange": lfc, "lfcSE": se, "stat": f_stat, "pvalue": table["PValue"].to_numpy(float)},
        index=counts.columns,
    )


def run_edgepython(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
    method: str,
    design: str,
    factor: str,
    test: str,
    reference: str,
    alpha: float,
    independent_filtering: bool,
) -> tuple[pd.DataFrame, np.ndarray]:
    """limma_voom or edger_ql on pseudobulk counts (samples x genes). Returns (table indexed by
    gene with baseMean, log2FoldChange, lfcSE, stat, pvalue, padj; TMM size factors)."""
    from scipy.stats import false_discovery_control

    run = {"limma_voom": limma_voom, "edger_ql": edger_ql}[method]
    table = run(counts, metadata, design=design, factor=factor, test=test, reference=reference)
    size_factors = tmm_size_factors(counts)
    table.insert(0, "baseMean", (counts.to_numpy(dtype=float) / size_factors[:, None]).mean(axis=0))
    if independent_filtering:
        table["padj"] = independent_filter(table["pvalue"], table["baseMean"], alpha=alpha)
    else:
        table["padj"] = false_discovery_control(table["pvalue"].to_numpy(float), method="bh")
    return table, size_factors
