"""Damaged and oversized cells, judged against each cell's transcriptional neighbours.

Why not one limit per sample: % mitochondrial counts and library size differ by cell type
(monocytes carry about twice the mito share of T cells), so a sample-wide median + 3 MADs cap on
% mito removed 10-13% of healthy PBMC samples, mostly monocytes, and a sample-wide upper limit on
counts removed large cell types rather than doublets.

What a damaged cell looks like: a cell whose membrane broke loses cytoplasmic mRNA but keeps its
mitochondrial transcripts (Ilicic et al. 2016, Genome Biol 17:29). Its mito log-odds
log((mito + 1) / (non-mito + 1)) rises and its log non-mito counts fall by the same amount. So the
call uses both metrics together, as miQC does with % mito and genes detected (Hippen et al. 2021,
PLoS Comput Biol 17:e1009290), and measures both against cells of the same kind, as ddqc does
with per-cluster limits (Subramanian et al. 2022, Genome Biol 23:267), here at the finest grain:
the median over each cell's `n_neighbors` nearest neighbours in an expression PCA built without
mitochondrial and ribosomal genes (so % mito does not shape the neighbourhoods). Residuals are
divided by their MAD over the sample (scipy's unscaled MAD, like the sample-wide limits).

- damaged: mito residual > n_mads_mt MADs AND non-mito deficit > n_mads_mt MADs, or mito
  residual > n_mads_mt_alone MADs. A cell with a slightly raised % mito but the transcriptome of
  its neighbours is kept. Cells called damaged are left out of their neighbours' medians in a
  second pass, so a clump of damaged cells does not hide itself.
- high_counts / high_genes: log1p counts (genes) more than n_mads_counts (n_mads_genes) robust
  SDs (MAD x 1.4826) above the neighbours' median: oversized for their kind (doublet-like), not merely large cells.
Lower limits stay sample-wide (qc/metrics.py): empty and ambient droplets have no kind.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd

# Cells needed for a neighbourhood reference; smaller samples keep the sample-wide limits.
MIN_CELLS = 50
PASSES = 2
# The oversized check measures in robust SDs (MAD x 1.4826): residuals from the neighbours are much
# tighter than a sample's spread, and at 5 raw MADs it removed 0.4-1.2% of the singlets of planted
# PBMC samples and of the SoupX curated cells while catching ~3-12% of the planted doublets, which
# the doublet score (qc/doublet_scores.py, scored on oversized cells too) is there to catch.
OVERSIZE_MAD_SCALE = 1.4826


def neighbour_index(counts, gene_symbols: pd.Index, *, mt: np.ndarray, n_neighbors: int, seed: int):
    """Indices (cells x k) of each cell's nearest neighbours, itself excluded, in an expression PCA.

    `counts` is cells x genes raw counts; mitochondrial (`mt`) and ribosomal genes stay out of the
    embedding. Exact Euclidean neighbours on 20 PCs of 2,000 HVGs (log1p of counts per 10,000,
    z-scaled): deterministic given `seed` and independent of the number of cores.
    """
    from sklearn.neighbors import NearestNeighbors

    from .doublet_scores import pca_embedding

    symbols = pd.Index(gene_symbols).astype(str)
    keep = ~(np.asarray(mt, dtype=bool) | symbols.str.upper().str.startswith(("RPS", "RPL")))
    embedding = pca_embedding(counts[:, np.flatnonzero(keep)], seed=seed)
    k = int(min(n_neighbors, embedding.n_obs - 1))
    index = NearestNeighbors(n_neighbors=k + 1).fit(embedding.obsm["X_pca"])
    return index.kneighbors(embedding.obsm["X_pca"], return_distance=False)[:, 1:]


def neighbour_median(values: np.ndarray, index: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Median of `values` over each cell's neighbours that are `usable` (the sample's median of the
    usable cells for a cell none of whose neighbours is)."""
    masked = np.where(usable[index], values[index], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: filled below
        median = np.nanmedian(masked, axis=1)
    return np.where(np.isfinite(median), median, np.median(values[usable]))


def _mad(values: np.ndarray, scale: float = 1.0) -> float:
    from scipy.stats import median_abs_deviation

    mad = scale * float(median_abs_deviation(values))
    return mad if mad > 0 else float(np.mean(np.abs(values - np.median(values)))) or 1.0


def call_damaged(
    mito: np.ndarray,
    non_mito: np.ndarray,
    index: np.ndarray,
    *,
    n_mads_joint: float,
    n_mads_alone: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(damaged, z_mt, z_counts, record) of cells with `mito` and `non_mito` counts.

    z_mt: mito log-odds above the neighbours' median, z_counts: log1p non-mito counts below it,
    both in MADs. Two passes: the second leaves the first pass's damaged cells out of the medians.
    """
    log_odds = np.log((mito + 1.0) / (non_mito + 1.0))
    log_non_mito = np.log1p(non_mito)
    usable = np.ones(len(mito), dtype=bool)
    for _ in range(PASSES):
        raised = log_odds - neighbour_median(log_odds, index, usable)
        deficit = neighbour_median(log_non_mito, index, usable) - log_non_mito
        mad_mt, mad_counts = _mad(raised[usable]), _mad(deficit[usable])
        z_mt, z_counts = raised / mad_mt, deficit / mad_counts
        damaged = ((z_mt > n_mads_joint) & (z_counts > n_mads_joint)) | (z_mt > n_mads_alone)
        usable = ~damaged
    record = {
        "mad_mito_log_odds": mad_mt,
        "mad_log1p_non_mito_counts": mad_counts,
        "n_damaged": int(damaged.sum()),
    }
    return damaged, z_mt, z_counts, record


def call_oversized(values: np.ndarray, index: np.ndarray, usable: np.ndarray, *, n_mads: float):
    """(failed, record): log1p `values` more than `n_mads` robust SDs (MAD x OVERSIZE_MAD_SCALE)
    above the neighbours' median."""
    log_values = np.log1p(values)
    excess = log_values - neighbour_median(log_values, index, usable)
    mad = _mad(excess[usable], scale=OVERSIZE_MAD_SCALE)
    failed = excess > n_mads * mad
    return failed, {
        "mad_log1p_above_neighbours": mad,
        "mad_scale": OVERSIZE_MAD_SCALE,
        "n_failed": int(failed.sum()),
    }


def neighbourhood_checks(
    adata: ad.AnnData,
    *,
    candidates: np.ndarray,
    n_neighbors: int,
    n_mads_mt: float,
    n_mads_mt_alone: float,
    n_mads_counts: float,
    n_mads_genes: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict]:
    """Damaged and oversized cells among the `candidates` (bool per barcode: those passing the
    sample-wide limits); returns ({reason: bool per barcode}, record for thresholds.json).

    Needs annotate_qc_metrics' obs total_counts, total_counts_mt, n_genes_by_counts and var mt.
    Writes: obs["damage_z_mt"], obs["damage_z_counts"] (MADs; NaN outside the candidates or
    without mitochondrial genes). Samples with fewer than MIN_CELLS candidates are not judged
    (the record says so).
    """
    rows = np.flatnonzero(candidates)
    masks = {reason: np.zeros(adata.n_obs, dtype=bool) for reason in ("high_counts", "high_genes", "damaged")}
    adata.obs["damage_z_mt"] = np.nan
    adata.obs["damage_z_counts"] = np.nan
    record: dict = {"reference": "neighbours", "n_neighbors": int(n_neighbors), "n_cells": int(len(rows))}
    if len(rows) < MIN_CELLS:
        record["skipped"] = f"{len(rows)} cells pass the sample-wide limits, fewer than {MIN_CELLS}"
        return masks, record
    mt = adata.var["mt"].to_numpy(dtype=bool)
    symbols = adata.var["gene_symbol"] if "gene_symbol" in adata.var else adata.var_names.to_series()
    index = neighbour_index(adata.X[rows], pd.Index(symbols), mt=mt, n_neighbors=n_neighbors, seed=seed)
    usable = np.ones(len(rows), dtype=bool)
    obs = adata.obs.iloc[rows]
    if mt.any():
        mito = obs["total_counts_mt"].to_numpy(dtype=float)
        damaged, z_mt, z_counts, record["damaged"] = call_damaged(
            mito,
            obs["total_counts"].to_numpy(dtype=float) - mito,
            index,
            n_mads_joint=n_mads_mt,
            n_mads_alone=n_mads_mt_alone,
        )
        record["damaged"].update(n_mads_mt=float(n_mads_mt), n_mads_mt_alone=float(n_mads_mt_alone))
        masks["damaged"][rows] = damaged
        adata.obs.iloc[rows, adata.obs.columns.get_loc("damage_z_mt")] = z_mt
        adata.obs.iloc[rows, adata.obs.columns.get_loc("damage_z_counts")] = z_counts
        usable = ~damaged
    else:
        record["damaged"] = {"skipped": "no mitochondrial genes in this sample; damaged cells not called"}
    for reason, metric, n_mads in (
        ("high_counts", "total_counts", n_mads_counts),
        ("high_genes", "n_genes_by_counts", n_mads_genes),
    ):
        failed, record[metric] = call_oversized(
            obs[metric].to_numpy(dtype=float), index, usable, n_mads=n_mads
        )
        record[metric]["n_mads"] = float(n_mads)
        masks[reason][rows] = failed
    return masks, record
