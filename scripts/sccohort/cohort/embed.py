"""Embeddings of the cohort: log-normalisation, PCA of the highly variable genes, Harmony, UMAP.

Nothing is densified: X stays CSR float32 and the PCA runs on the sparse matrix of the highly
variable genes with implicit centring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..counts import mean_var
from ..errors import InputError
from ..names import SHEET_CATEGORICALS

LOG = logging.getLogger("sccohort")


def normalise(adata, *, target_sum: float = 1e4) -> None:
    """Keep raw counts in layers["counts"]; X becomes log1p(counts / total * target_sum), CSR float32.

    In place, without densifying. Cells with no counts stay all-zero.
    Writes: layers["counts"] (the raw counts, CSR float32), X, uns["log1p"],
    obs["total_counts_cohort"] (counts per cell in the merged genes, float32).
    """
    counts = adata.X
    if not sp.issparse(counts):
        counts = sp.csr_matrix(counts)
    counts = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    empty = totals == 0
    if empty.any():
        LOG.warning("%d cells have no counts in the kept genes; they stay all-zero.", int(empty.sum()))
    scale = np.divide(float(target_sum), totals, out=np.zeros_like(totals), where=~empty).astype(np.float32)
    # X shares the (read-only) index arrays of the counts and gets only a data array of its own;
    # rows are scaled in chunks, so no per-entry temporary of the whole matrix is made (at 100k
    # cells the float64 np.repeat alone was 1.1 GB, the largest allocation of the merge).
    data = counts.data.copy()
    indptr = counts.indptr
    for start in range(0, counts.shape[0], 20000):
        stop = min(start + 20000, counts.shape[0])
        block = slice(indptr[start], indptr[stop])
        data[block] *= np.repeat(scale[start:stop], np.diff(indptr[start : stop + 1]))
    np.log1p(data, out=data)
    X = sp.csr_matrix((data, counts.indices, indptr), shape=counts.shape)
    adata.layers["counts"] = counts
    adata.X = X
    adata.uns["log1p"] = {"base": None}  # natural log, as scanpy's log1p records it
    adata.obs["total_counts_cohort"] = totals.astype(np.float32)


def run_pca(adata, *, n_comps: int = 50, scale: bool = True, seed: int = 0) -> None:
    """PCA on the highly variable genes of X (log-normalised), sparse with implicit centring.

    scale=True divides each gene by its standard deviation first (unit variance; sparsity is kept
    because centring stays implicit; unlike sc.pp.scale there is no clipping). Uses scanpy's pca
    (sklearn PCA, arpack, seeded).
    Writes: obsm["X_pca"] (float32), varm["PCs"] (zero for genes that are not highly variable),
    uns["pca"] (variance, variance_ratio, params).
    """
    import scanpy as sc

    mask = adata.var["highly_variable"].to_numpy(dtype=bool) if "highly_variable" in adata.var else None
    X = adata.X[:, mask] if mask is not None else adata.X
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    if scale:
        _, var = mean_var(X, ddof=1)
        sd = np.sqrt(var)
        sd[sd == 0] = 1
        X.data /= sd[X.indices]
    n_comps = int(min(n_comps, X.shape[0] - 1, X.shape[1] - 1))
    if n_comps < 2:
        raise InputError(f"Too few cells ({X.shape[0]}) or genes ({X.shape[1]}) for a PCA.")
    X_pca, components, ratio, variance = sc.pp.pca(
        X, n_comps=n_comps, zero_center=True, svd_solver="arpack", random_state=seed, return_info=True
    )
    adata.obsm["X_pca"] = np.asarray(X_pca, dtype=np.float32)
    loadings = np.zeros((adata.n_vars, n_comps), dtype=np.float32)
    loadings[mask if mask is not None else slice(None)] = components.T
    adata.varm["PCs"] = loadings
    adata.uns["pca"] = {
        "variance": np.asarray(variance),
        "variance_ratio": np.asarray(ratio),
        "params": {
            "n_comps": n_comps,
            "scale": bool(scale),
            "zero_center": True,
            "svd_solver": "arpack",
            "use_highly_variable": mask is not None,
        },
    }
    LOG.info(
        "PCA: %d components on %d genes explain %.1f%% of the variance.",
        n_comps,
        X.shape[1],
        100 * float(np.sum(ratio)),
    )


def run_harmony(
    adata,
    *,
    batch_keys: Sequence[str] = ("sample",),
    seed: int = 0,
    theta: float = 2.0,
    max_iter: int = 10,
    threads: int = 1,
) -> bool:
    """Harmony on obsm["X_pca"] (harmonypy.run_harmony, called directly).

    Batch keys with a single level are ignored; returns False (and writes nothing) when no key
    has two levels.
    Writes: obsm["X_pca_harmony"] (float32).
    """
    import harmonypy

    keys = []
    for key in batch_keys:
        if key not in adata.obs:
            raise InputError(f"cohort.batch_keys names {key!r}, which is not an obs column of the cohort.")
        if adata.obs[key].astype(str).nunique() > 1:
            keys.append(key)
        else:
            LOG.warning("Harmony: batch key %r has a single level; it is ignored.", key)
    if not keys:
        LOG.warning("Harmony skipped: no batch key has two or more levels.")
        return False
    meta = pd.DataFrame({k: adata.obs[k].astype(str).to_numpy() for k in keys})
    pcs = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float64)
    result = harmonypy.run_harmony(
        pcs.T,  # PCs x cells: unambiguous even when n_cells == n_pcs
        meta,
        keys,
        theta=theta,
        max_iter_harmony=max_iter,
        random_state=seed,
        ncores=max(1, int(threads)),
        verbose=False,
    )
    corrected = np.asarray(result.Z_corr)
    if corrected.shape != pcs.shape:
        corrected = corrected.T
    adata.obsm["X_pca_harmony"] = corrected.astype(np.float32)
    LOG.info("Harmony on %d PCs corrected for %s.", pcs.shape[1], ", ".join(keys))
    return True


def run_umap(
    adata,
    *,
    neighbors_key: str = "neighbors",
    key_added: str = "X_umap",
    seed: int = 0,
    min_dist: float = 0.5,
) -> None:
    """scanpy's UMAP of the kNN graph under uns[neighbors_key].

    Writes: obsm[key_added], uns[key_added] (scanpy's UMAP parameters).
    """
    import scanpy as sc

    sc.tl.umap(adata, random_state=seed, neighbors_key=neighbors_key, key_added=key_added, min_dist=min_dist)


def embedding_table(adata, *, basis: str = "X_umap") -> pd.DataFrame:
    """barcode (the cohort's cell id), UMAP1, UMAP2 and the sheet and leiden columns, for the report."""
    coords = np.asarray(adata.obsm[basis])
    table = pd.DataFrame({"barcode": adata.obs_names, "UMAP1": coords[:, 0], "UMAP2": coords[:, 1]})
    columns = [c for c in adata.obs.columns if c in SHEET_CATEGORICALS or c.startswith("leiden_")]
    for column in columns:
        table[column] = adata.obs[column].astype(str).to_numpy()
    return table
