"""Tests of the highly variable gene selection (sccohort.cohort.hvg)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sccohort.cohort.hvg import highly_variable_genes, hvg_batches


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_scanpy_hvg_flavours_respect_exclusion(prepared, flavor):
    adata = prepared.copy()
    flagged = (adata.var["mt"] | adata.var["ribo"]).to_numpy()
    highly_variable_genes(adata, n_top_genes=500, flavor=flavor, batch_key="sample", exclude=flagged)
    chosen = adata.var["highly_variable"].to_numpy()
    assert chosen.sum() == 500 and not (chosen & flagged).any()
    assert "_hvg_batch" not in adata.obs


def test_seurat_v3_selects_overdispersed_genes():
    """Poisson genes vs negative-binomial genes of the same means: the NB genes are the HVGs."""
    rng = np.random.default_rng(5)
    n_cells, n_genes, n_variable = 1500, 1500, 100
    means = np.exp(rng.uniform(np.log(0.05), np.log(20), n_genes))
    counts = rng.poisson(means[None, :], size=(n_cells, n_genes)).astype(np.float32)
    variable = rng.choice(n_genes, n_variable, replace=False)
    r = 0.5  # NB dispersion: variance = mu + mu^2 / r
    p = r / (r + means[variable])
    counts[:, variable] = rng.negative_binomial(r, p, size=(n_cells, n_variable))
    adata = ad.AnnData(X=sp.csr_matrix(counts))
    adata.layers["counts"] = adata.X.copy()
    adata.obs["sample"] = np.where(np.arange(n_cells) < 700, "a", "b")
    for batch_key in ("sample", None):
        highly_variable_genes(adata, n_top_genes=n_variable, flavor="seurat_v3", batch_key=batch_key)
        chosen = np.flatnonzero(adata.var["highly_variable"].to_numpy())
        assert len(np.intersect1d(chosen, variable)) >= 0.9 * n_variable
    # excluded genes are never selected, and the rest of the ranking is unchanged
    exclude = np.zeros(n_genes, dtype=bool)
    exclude[variable[:10]] = True
    highly_variable_genes(
        adata, n_top_genes=n_variable, flavor="seurat_v3", batch_key="sample", exclude=exclude
    )
    assert not adata.var["highly_variable"].to_numpy()[exclude].any()
    assert adata.var["highly_variable"].sum() == n_variable


def test_small_hvg_batches_are_pooled():
    labels = pd.Series(["a"] * 100 + ["b"] * 80 + ["c"] * 20 + ["d"] * 40)
    codes, summary = hvg_batches(labels, min_cells=50)
    assert summary["pooled"] == ["c", "d"] and summary["n_batches"] == 3
    assert len(set(codes[180:])) == 1 and codes[180] not in (codes[0], codes[100])
    codes, summary = hvg_batches(pd.Series(["a"] * 100 + ["b"] * 10), min_cells=50)
    assert summary["ignored"] == ["b"] and (codes[100:] == -1).all()
    codes, summary = hvg_batches(pd.Series(["a"] * 10 + ["b"] * 10), min_cells=50)
    assert codes is None  # everything pooled into one group = no batches
