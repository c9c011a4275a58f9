"""Highly variable genes of the merged cohort: scanpy's seurat_v3 on the raw counts (default), or
seurat / cell_ranger on log-normalised X, batch-aware, with MT and ribosomal genes excluded."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import InputError

LOG = logging.getLogger("sccohort")


def hvg_batches(labels: pd.Series | None, *, min_cells: int) -> tuple[np.ndarray | None, dict]:
    """Batch codes for HVG selection: batches smaller than `min_cells` are pooled into one group.

    Returns (codes or None for a single batch, summary). A pooled group that is still smaller than
    `min_cells` while other batches are large enough is left out of the selection (code -1).
    """
    if labels is None:
        return None, {"n_batches": 1, "pooled": []}
    values = pd.Series(np.asarray(labels).astype(str))
    sizes = values.value_counts()
    small = sorted(sizes.index[sizes < min_cells])
    large = [b for b in sizes.index if b not in small]
    groups = {b: i for i, b in enumerate(sorted(large))}
    codes = values.map(groups).fillna(-1).to_numpy(dtype=np.int64)
    summary = {"n_batches": len(large), "pooled": small, "ignored": []}
    if small:
        pooled = values.isin(small).to_numpy()
        if pooled.sum() >= min_cells or not large:
            codes[pooled] = len(large)
            summary["n_batches"] += 1
        else:
            summary["ignored"] = small
    if summary["n_batches"] <= 1:
        return (None if not summary["ignored"] else codes), summary
    return codes, summary


def _seurat_v3_hvg(adata, *, n_top: int, codes: np.ndarray | None, eligible: np.ndarray) -> pd.DataFrame:
    """scanpy's seurat_v3 on the raw counts of the eligible genes, per HVG batch group.

    Excluded genes are left out of the call (not just the result), so they neither take a slot
    nor bend the mean-variance trend; cells of ignored batch groups (code -1) are left out too.
    """
    import anndata as ad
    import scanpy as sc

    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    rows = slice(None) if codes is None or (codes >= 0).all() else np.flatnonzero(codes >= 0)
    cols = slice(None) if eligible.all() else np.flatnonzero(eligible)
    # index only the axes that need it: counts[:] alone would copy the whole matrix once more
    subset = counts if isinstance(rows, slice) else counts[rows]
    subset = subset if isinstance(cols, slice) else subset[:, cols]
    obs = pd.DataFrame(index=pd.RangeIndex(subset.shape[0]).astype(str))
    batch_key = None
    if codes is not None:
        batch_key = "hvg_batch"
        obs[batch_key] = pd.Categorical(codes[codes >= 0].astype(str))
    var = pd.DataFrame(index=adata.var_names[eligible])
    selected = sc.pp.highly_variable_genes(
        ad.AnnData(X=subset, obs=obs, var=var),
        flavor="seurat_v3",
        n_top_genes=n_top,
        batch_key=batch_key,
        inplace=False,
        # load_sample refused anything but integer counts; scanpy's check makes two
        # matrix-sized temporaries (data % 1 and its comparison)
        check_values=False,
    )
    selected.index = var.index
    df = selected.reindex(adata.var_names)
    df["highly_variable"] = df["highly_variable"].fillna(False).astype(bool)
    if "highly_variable_nbatches" in df:
        df["highly_variable_nbatches"] = df["highly_variable_nbatches"].fillna(0).astype(int)
    return df


def _scanpy_hvg(
    adata, *, flavor: str, n_top_genes: int, n_top: int, codes: np.ndarray | None, eligible: np.ndarray
) -> pd.DataFrame:
    """scanpy's seurat or cell_ranger on X, then the top `n_top` eligible genes re-ranked.

    scanpy cannot leave genes out, so the excluded genes are ranked last after the call (batch
    count first when there are batches, then the normalised dispersion).
    """
    import scanpy as sc

    obs_key = None
    if codes is not None:
        obs_key = "_hvg_batch"
        adata.obs[obs_key] = pd.Categorical(codes.astype(str))
    try:
        df = sc.pp.highly_variable_genes(
            adata, flavor=flavor, n_top_genes=n_top_genes, batch_key=obs_key, inplace=False
        )
    finally:
        if obs_key:
            del adata.obs[obs_key]
    df.index = adata.var_names
    score = df["dispersions_norm"].astype(float).where(eligible, -np.inf).fillna(-np.inf)
    keys = [score]
    if "highly_variable_nbatches" in df:
        keys = [df["highly_variable_nbatches"].where(eligible, -1), score]
    ranking = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)}).sort_values(
        [f"k{i}" for i in range(len(keys))], ascending=False, kind="stable"
    )
    df["highly_variable"] = False
    df.loc[ranking.index[:n_top], "highly_variable"] = True
    return df.drop(columns=[c for c in ("highly_variable_intersection",) if c in df])


def highly_variable_genes(
    adata,
    *,
    n_top_genes: int = 2000,
    flavor: str = "seurat_v3",
    batch_key: str | None = "sample",
    exclude: np.ndarray | None = None,
    min_batch_cells: int = 50,
) -> pd.DataFrame:
    """Select highly variable genes; returns scanpy's table of them.

    seurat_v3 (default) is scanpy's, on layers["counts"] (its loess trend needs scikit-misc);
    seurat and cell_ranger are scanpy's on X.
    With `batch_key`, batches smaller than `min_batch_cells` cells are pooled (see hvg_batches).
    Genes in `exclude` (e.g. MT and ribosomal) are never selected; for seurat_v3 they are also
    left out of the trend fit, so the result equals selecting on the other genes alone.

    Writes: var["highly_variable"] and scanpy's statistics (means, variances or dispersions,
    highly_variable_rank, highly_variable_nbatches with batches), uns["hvg"] (flavor,
    n_top_genes, batch_key).
    """
    eligible = np.ones(adata.n_vars, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    n_top = int(min(n_top_genes, eligible.sum()))
    labels = None
    if batch_key is not None:
        if batch_key not in adata.obs:
            raise InputError(f"cohort.hvg_batch_key {batch_key!r} is not an obs column of the merged cohort.")
        labels = adata.obs[batch_key]
    codes, summary = hvg_batches(labels, min_cells=min_batch_cells)
    if summary.get("pooled"):
        LOG.warning(
            "HVG: batches with fewer than %d cells (%s) are %s.",
            min_batch_cells,
            ", ".join(summary["pooled"]),
            "left out" if summary.get("ignored") else "pooled into one group",
        )
    if flavor == "seurat_v3":
        df = _seurat_v3_hvg(adata, n_top=n_top, codes=codes, eligible=eligible)
    elif flavor in ("seurat", "cell_ranger"):
        df = _scanpy_hvg(
            adata, flavor=flavor, n_top_genes=n_top_genes, n_top=n_top, codes=codes, eligible=eligible
        )
    else:
        raise InputError(
            f"config: cohort.hvg_flavor {flavor!r} is not one of seurat_v3, seurat, cell_ranger."
        )
    for column in df.columns:
        adata.var[column] = df[column].to_numpy()
    adata.uns["hvg"] = {"flavor": flavor, "n_top_genes": n_top, "batch_key": batch_key or "null"}
    LOG.info(
        "HVG (%s, batch key %s, %d batch groups): %d genes selected of %d eligible (%d excluded).",
        flavor,
        batch_key,
        summary["n_batches"],
        int(df["highly_variable"].sum()),
        int(eligible.sum()),
        int((~eligible).sum()),
    )
    return df
