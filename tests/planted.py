"""Planted-truth cohorts from real cells (the generator of the DE and composition tests).

Cells of each cell type are pooled over the real donors and dealt at random to 2 x n_per
pseudo-samples (n_per "trt", n_per "ctrl"), so nothing but what is planted separates the
conditions. Donor-like variation is added the way the issue describes it: each sample
multiplies each gene by a lognormal factor (sd 0.5 on the natural-log scale), the same in all
of its cells. Planted genes (a fraction of the genes expressed in that type) are multiplied by
2^log2FC in the treated samples' cells of one type, |log2FC| uniform in [1, 3], sign at random.
A cell's new counts are Poisson(count x factors), so the pseudobulk sums stay counts.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def planted_cohort(
    cells: ad.AnnData,
    *,
    seed: int,
    planted_types: tuple[str, ...],
    n_per: int = 3,
    sd: float = 0.5,
    fraction: float = 0.1,
    min_mean: float = 0.1,
) -> tuple[ad.AnnData, dict[str, pd.Series]]:
    """(cohort, truth): the cohort's obs has sample, condition, cell_type; truth[type] is each
    gene's planted log2 fold change in that type (0: not planted). Types not in planted_types
    have no planted gene. A gene is eligible in a type when its mean count per cell >= min_mean."""
    rng = np.random.default_rng(seed)
    sample = rng.permutation(np.arange(cells.n_obs) % (2 * n_per))
    treated = sample >= n_per
    matrix = sp.csr_matrix(cells.X, dtype=np.float64, copy=True)
    cell_type = cells.obs["cell_type"].astype(str).to_numpy()
    factor = np.exp(rng.normal(0.0, sd, size=(2 * n_per, cells.n_vars)))
    truth = {}
    for name in planted_types:
        mean = np.asarray(matrix[cell_type == name].mean(axis=0)).ravel()
        eligible = np.flatnonzero(mean >= min_mean)
        chosen = rng.choice(eligible, int(round(fraction * len(eligible))), replace=False)
        lfc = np.zeros(cells.n_vars)
        lfc[chosen] = rng.uniform(1.0, 3.0, len(chosen)) * rng.choice([-1.0, 1.0], len(chosen))
        truth[name] = pd.Series(lfc, index=cells.var_names)
    rows = np.repeat(np.arange(cells.n_obs), np.diff(matrix.indptr))
    scale = factor[sample[rows], matrix.indices]
    for name, lfc in truth.items():
        hit = (cell_type[rows] == name) & treated[rows]
        scale[hit] *= 2.0 ** lfc.to_numpy()[matrix.indices[hit]]
    matrix.data = rng.poisson(matrix.data * scale).astype(np.float64)
    matrix.eliminate_zeros()
    obs = pd.DataFrame(
        {
            "sample": [f"s{i}" for i in sample],
            "condition": np.where(treated, "trt", "ctrl"),
            "cell_type": cell_type,
        },
        index=cells.obs_names,
    )
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=cells.var_names)), truth


def observed_fdr_recall(results, truth: dict[str, pd.Series], *, alpha: float) -> tuple[int, int, int, int]:
    """(calls, false calls, planted genes found, planted genes with |log2FC| >= 1 tested), over
    every tested group; a call in a type without planted genes is false."""
    calls = false = found = planted = 0
    for group, result in results.items():
        if result.table is None:
            continue
        table = result.table.set_index("gene")
        lfc = truth.get(group, pd.Series(0.0, index=table.index)).reindex(table.index).fillna(0.0)
        called = np.nan_to_num(table["padj"].to_numpy(dtype=float), nan=1.0) < alpha
        calls += int(called.sum())
        false += int((called & (lfc.to_numpy() == 0)).sum())
        strong = np.abs(lfc.to_numpy()) >= 1
        found += int((called & strong).sum())
        planted += int(strong.sum())
    return calls, false, found, planted
