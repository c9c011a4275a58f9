"""Marker genes per cluster: detection counts, the genes worth testing, illico's sparse Wilcoxon
(one cluster vs the rest, scanpy's statistics), the marker table and its dot plot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..h5ad import read_gene_columns, read_parts, x_row_blocks

LOG = logging.getLogger("sccohort")

MARKER_COLUMNS = [
    "cluster",
    "rank",
    "gene",
    "gene_id",
    "score",
    "logfoldchange",
    "pval",
    "pval_adj",
    "pct_in",
    "pct_out",
]


# --------------------------------------------------------------------------------------------
# Detection and the tested genes
# --------------------------------------------------------------------------------------------
def detection_by_group(matrix, codes: np.ndarray, n_groups: int, *, chunk_rows: int = 5000) -> np.ndarray:
    """groups x genes: how many cells of each group have a non-zero value of each gene.

    `codes` is each row's group (0 .. n_groups - 1; negative rows are ignored). CSR rows are
    counted in chunks, so the temporaries stay at one chunk's entries.
    """
    matrix = sp.csr_matrix(matrix)
    counts = np.zeros((n_groups, matrix.shape[1]), dtype=np.int64)
    for start in range(0, matrix.shape[0], chunk_rows):
        counts += _block_detection(
            matrix[start : start + chunk_rows], codes[start : start + chunk_rows], n_groups
        )
    return counts


def _block_detection(block: sp.csr_matrix, codes: np.ndarray, n_groups: int) -> np.ndarray:
    n_genes = block.shape[1]
    # the flat (group, gene) index fits int32 for any realistic cohort; it halves the temporaries
    dtype = np.int32 if n_groups * n_genes < np.iinfo(np.int32).max else np.int64
    group = np.repeat(np.asarray(codes, dtype=dtype), np.diff(block.indptr))
    keep = (block.data != 0) & (group >= 0)
    flat = np.bincount(group[keep] * n_genes + block.indices[keep], minlength=n_groups * n_genes)
    return flat.reshape(n_groups, n_genes)


def _tested_gene_mask(detected: np.ndarray, codes: np.ndarray, min_pct: float) -> np.ndarray:
    """Genes detected in at least `min_pct` of the cells of at least one group (groups x genes counts).

    Every gene when min_pct <= 0."""
    if min_pct <= 0:
        return np.ones(detected.shape[1], dtype=bool)
    sizes = np.bincount(codes[codes >= 0], minlength=detected.shape[0])
    keep = (detected / np.maximum(sizes, 1)[:, None] >= min_pct).any(axis=0)
    LOG.info(
        "Markers: %d of %d genes are detected in >= %.0f%% of the cells of some cluster and are tested.",
        int(keep.sum()),
        detected.shape[1],
        100 * min_pct,
    )
    return keep


def marker_test_genes(adata, *, groupby: str, min_pct: float) -> np.ndarray:
    """Genes (a mask over var) detected in at least `min_pct` of the cells of at least one group."""
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    return _tested_gene_mask(detection_by_group(adata.X, codes, len(labels.categories)), codes, min_pct)


def restrict_to_marker_genes(adata, *, groupby: str, min_pct: float):
    """`adata` with only the genes marker_test_genes keeps (a copy); `adata` itself when min_pct <= 0."""
    if min_pct <= 0:
        return adata
    return adata[:, marker_test_genes(adata, groupby=groupby, min_pct=min_pct)].copy()


def read_marker_genes(
    path: str | Path, *, min_pct: float, groupby: str | None = None, chunk_rows: int = 20000
):
    """The clustered .h5ad at `path` with X holding only the genes marker_test_genes keeps.

    The same object as read_parts(path, ("X", "obs", "var", "uns")) passed through
    restrict_to_marker_genes, but X is read twice in row chunks (detection, then the kept genes),
    so the whole matrix is never in memory. `groupby` defaults to uns["cohort"]["default_cluster_key"].
    """
    import anndata as ad
    import h5py

    path = Path(path)
    adata = read_parts(path, parts=("obs", "var", "uns"))
    groupby = groupby or adata.uns["cohort"]["default_cluster_key"]
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    with h5py.File(path, "r") as handle:
        detected = np.zeros((len(labels.categories), adata.n_vars), dtype=np.int64)
        # smaller chunks than for reading the kept genes: the counting's temporaries scale with them
        for start, block in x_row_blocks(handle, path, max(1, chunk_rows // 4)):
            detected += _block_detection(block, codes[start : start + block.shape[0]], len(labels.categories))
    keep = _tested_gene_mask(detected, codes, min_pct)
    X = read_gene_columns(path, adata.var_names[keep], chunk_rows=chunk_rows)
    return ad.AnnData(X=X, obs=adata.obs, var=adata.var[keep].copy(), uns=adata.uns)


# --------------------------------------------------------------------------------------------
# The test and the marker table
# --------------------------------------------------------------------------------------------
def wilcoxon_one_vs_rest(adata, *, groupby: str, groups: Sequence[str], threads: int = 1) -> pd.DataFrame:
    """Wilcoxon rank-sum test of each group's cells against all other cells, for every gene of X.

    The statistics of scanpy's ``rank_genes_groups(method="wilcoxon", reference="rest",
    tie_correct=False)`` (z-score as score, two-sided normal p-value, log2 fold change of
    expm1 group means), computed by illico on the sparse matrix: it ranks each gene's non-zero
    values once instead of a dense copy of every gene per chunk, and needs no per-group copies of
    the matrix. Returns columns group, gene, score, logfoldchange, pval (genes in var order).
    """
    import contextlib
    import io

    import anndata as ad
    import numba
    from illico import asymptotic_wilcoxon
    from loguru import logger

    # illico sets numba's thread count, which must not exceed the pool numba started with
    # (NUMBA_NUM_THREADS, read at import): a process capped below the rule's threads would raise.
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))

    if sp.issparse(adata.X) and not adata.X.has_sorted_indices:
        X = adata.X.copy()
        X.sort_indices()  # illico refuses CSR input with unsorted column indices
        adata = ad.AnnData(X=X, obs=adata.obs, var=adata.var)
    logger.disable("illico")  # its INFO lines and tqdm bar would fill the rule log
    with contextlib.redirect_stderr(io.StringIO()):
        result = asymptotic_wilcoxon(
            adata,
            is_log1p=True,
            group_keys=groupby,
            reference=None,
            groups=list(groups),
            n_threads=threads,
            use_continuity=False,
            tie_correct=False,
            exp_post_agg=True,
        )
    with np.errstate(divide="ignore"):
        logfoldchange = np.log2(result["fold_change"].to_numpy(dtype=float))
    return pd.DataFrame(
        {
            "group": result.index.get_level_values(0).astype(str),
            "gene": result.index.get_level_values(1).astype(str),
            "score": result["z_score"].to_numpy(dtype=float),
            "logfoldchange": logfoldchange,
            "pval": result["p_value"].to_numpy(dtype=float),
        }
    )


def _cluster_table(
    stats: pd.DataFrame,
    group: str,
    *,
    code: int,
    detected: np.ndarray,
    group_sizes: np.ndarray,
    gene_position: pd.Index,
    n_genes: int,
) -> pd.DataFrame:
    """One cluster's top `n_genes` rows of the test with pval_adj, pct_in, pct_out and rank."""
    from scipy.stats import false_discovery_control

    table = stats[stats["group"] == group]
    position = gene_position.get_indexer(table["gene"])
    n_cells = int(group_sizes.sum())
    table = table.assign(
        pval_adj=false_discovery_control(table["pval"].to_numpy()),
        pct_in=detected[code, position] / group_sizes[code],
        pct_out=(detected[:, position].sum(axis=0) - detected[code, position])
        / (n_cells - group_sizes[code]),
    )
    # highest score first; ties in gene order, so the table does not depend on the test's layout
    order = np.lexsort((position, -table["score"].to_numpy()))[:n_genes]
    return table.iloc[order].assign(rank=np.arange(1, len(order) + 1))


def find_markers(
    adata, *, groupby: str, n_genes: int = 25, min_pct: float = 0.0, threads: int = 1
) -> pd.DataFrame:
    """Wilcoxon rank-sum markers per cluster (one cluster vs the rest) on log-normalised X.

    Returns the top `n_genes` genes per cluster (by Wilcoxon score) with columns cluster, rank,
    gene, gene_id, score, logfoldchange, pval, pval_adj, pct_in (fraction of the cluster's cells
    expressing it), pct_out (fraction of the other cells). Clusters with fewer than 2 cells are
    skipped; with one cluster the table is empty. The statistics are those of scanpy's
    rank_genes_groups (wilcoxon, tie_correct=False); see wilcoxon_one_vs_rest.

    min_pct: only genes detected in at least this fraction of the cells of at least one cluster
    are tested (Seurat's min.pct, applied once for all clusters: a gene kept for one comparison is
    tested in all). A gene below it in every cluster cannot be a cluster's marker; on large
    cohorts such rare genes are most of the genes and of the test's run time. pval_adj is
    Benjamini-Hochberg over the tested genes, per cluster.
    """
    sizes = adata.obs[groupby].value_counts()
    groups = [str(g) for g in adata.obs[groupby].cat.categories if sizes.get(g, 0) >= 2]
    if len(groups) < 2 or adata.obs[groupby].nunique() < 2:
        LOG.warning("Markers: fewer than two clusters with 2+ cells; the marker table is empty.")
        return pd.DataFrame(columns=MARKER_COLUMNS)
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    # one count of detections serves both the min_pct gene filter and pct_in / pct_out
    detected = detection_by_group(adata.X, codes, len(labels.categories))
    keep = _tested_gene_mask(detected, codes, min_pct)
    tested = adata if keep.all() else adata[:, keep].copy()
    detected = detected[:, keep]
    stats = wilcoxon_one_vs_rest(tested, groupby=groupby, groups=groups, threads=threads)

    group_sizes = np.bincount(codes[codes >= 0], minlength=len(labels.categories))
    gene_position = pd.Index(tested.var_names.astype(str))
    tables = [
        _cluster_table(
            stats,
            group,
            code=labels.categories.get_loc(group),
            detected=detected,
            group_sizes=group_sizes,
            gene_position=gene_position,
            n_genes=n_genes,
        )
        for group in groups
    ]
    df = pd.concat(tables, ignore_index=True).rename(columns={"group": "cluster"})
    df["gene_id"] = (
        tested.var.loc[df["gene"], "gene_id"].to_numpy() if "gene_id" in tested.var else df["gene"]
    )
    return df[MARKER_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# The dot plot
# --------------------------------------------------------------------------------------------
def top_markers(markers: pd.DataFrame, *, n_per_cluster: int = 3) -> dict[str, list[str]]:
    """Up to n positive markers per cluster, each gene shown once (for the dot plot)."""
    chosen: dict[str, list[str]] = {}
    used: set[str] = set()
    for cluster, table in markers.groupby("cluster", sort=False):
        genes = []
        for row in table.sort_values("rank").itertuples():
            if row.logfoldchange > 0 and row.gene not in used:
                genes.append(row.gene)
                used.add(row.gene)
            if len(genes) == n_per_cluster:
                break
        if genes:
            chosen[str(cluster)] = genes
    return chosen


def plot_marker_dotplot(adata, markers: pd.DataFrame, *, groupby: str, path, n_per_cluster: int = 3) -> None:
    """Dot plot of the top positive markers of each cluster (scaled per gene), saved as PNG."""
    from ..plotting import save_dotplot

    genes = top_markers(markers, n_per_cluster=n_per_cluster) if len(markers) else {}
    save_dotplot(
        adata,
        genes,
        groupby,
        path,
        empty_message="No marker genes (fewer than two clusters)",
        colorbar_title="Mean expression\n(scaled per gene)",
    )
