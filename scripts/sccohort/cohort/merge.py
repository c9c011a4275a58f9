"""Merge the per-sample filtered.h5ad files into one AnnData of raw counts (CSR float32).

Genes are matched on var gene_id across samples (pass 0, in genes.py: the gene sets and their
overlap check; another species or reference stops the run with the samples named); pass 1 counts
the detections per gene, pass 2 fills the merged matrix; obs gets the sample-sheet columns and is
tidied into categoricals. The counts are never densified and each file is read one at a time, so
the peak is about the merged matrix plus one sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..counts import is_integer_valued
from ..errors import InputError
from ..h5ad import read_elem
from ..names import SHEET_CATEGORICALS, cell_name
from .genes import GeneSets, gene_sets, mito_ribo_flags

LOG = logging.getLogger("sccohort")


# --------------------------------------------------------------------------------------------
# Reading one sample
# --------------------------------------------------------------------------------------------
def _read_counts(path: Path) -> sp.csr_matrix:
    matrix = read_elem(path, "X")
    if matrix is None:
        raise InputError(f"{path} has no X matrix; it must hold raw counts (re-run the QC stage).")
    if not sp.issparse(matrix):
        matrix = sp.csr_matrix(np.asarray(matrix))
    matrix = sp.csr_matrix(matrix)
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    matrix.sum_duplicates()
    return matrix


def _sample_obs(path: Path, sample: str, n_cells: int, sheet_row: Mapping) -> pd.DataFrame:
    """One sample's obs: cells named "<sample>_<barcode>", the barcode kept, the sheet's columns."""
    obs = read_elem(path, "obs")
    if obs is None or len(obs) != n_cells:
        raise InputError(f"{path}: obs has {0 if obs is None else len(obs)} rows but X has {n_cells} cells.")
    obs = obs.copy()
    barcodes = obs.index.astype(str)
    if barcodes.has_duplicates:
        raise InputError(
            f"{path} (sample {sample!r}) has duplicated barcodes "
            f"(e.g. {barcodes[barcodes.duplicated()][0]!r}); barcodes must be unique within a sample."
        )
    if "sample" in obs and not (obs["sample"].astype(str) == sample).all():
        LOG.warning("%s: obs 'sample' differs from the sample id; the sample id is used.", sample)
    obs = obs.drop(columns=["barcode"], errors="ignore")
    obs.insert(0, "barcode", np.asarray(barcodes))
    for column, value in sheet_row.items():
        if column == "path":
            continue
        obs[column] = "" if value is None else str(value)
    obs["sample"] = sample
    obs.index = pd.Index([cell_name(sample, b) for b in barcodes])
    return obs


def _dropped_by_qc(path: Path) -> bool:
    """True when the per-sample stage marked the sample dropped (uns["qc_status"]["dropped"])."""
    dropped = read_elem(path, "uns/qc_status/dropped")
    return dropped is not None and bool(dropped)


def _without_dropped(paths: dict[str, Path], min_samples_kept: int) -> tuple[dict[str, Path], list[str]]:
    """The samples QC did not drop, and those it dropped; InputError when too few are left."""
    dropped = [s for s, p in paths.items() if _dropped_by_qc(p)]
    if not dropped:
        return paths, dropped
    LOG.warning(
        "Samples dropped by QC (qc.failed_sample_policy: drop) are left out of the cohort: %s.",
        ", ".join(dropped),
    )
    needed = min(int(min_samples_kept), len(paths))
    kept = {s: p for s, p in paths.items() if s not in dropped}
    if len(kept) < max(needed, 1):
        raise InputError(
            f"QC dropped {len(dropped)} of {len(kept) + len(dropped)} samples ({', '.join(dropped)}), "
            f"leaving {len(kept)}; qc.min_samples_kept is {min_samples_kept}. Check the per-sample QC "
            "reports (results/qc/<sample>/report.html), loosen the QC thresholds or min_cells_after_qc, "
            "or remove the failed samples from the sheet."
        )
    return kept, dropped


# --------------------------------------------------------------------------------------------
# Passes 1 and 2 of the merge: detections, then the counts
# --------------------------------------------------------------------------------------------
def _detections(paths: Mapping[str, Path], genes: GeneSets) -> tuple[np.ndarray, dict[str, int]]:
    """Pass 1: per universe gene the cells detecting it, and the cells of each sample."""
    n_cells_detected = np.zeros(genes.n_universe, dtype=np.int64)
    n_cells = {}
    for sample, path in paths.items():
        counts = _read_counts(path)
        if counts.shape[1] != genes.n_features[sample]:
            raise InputError(
                f"{path}: X has {counts.shape[1]} genes but var lists {genes.n_features[sample]}."
            )
        if counts.nnz and counts.data.min() < 0:
            raise InputError(
                f"{path} (sample {sample!r}) has negative values in X; the cohort stage needs raw counts."
            )
        if counts.nnz and not is_integer_valued(counts):
            LOG.warning("%s: X holds non-integer values; raw integer counts are expected.", sample)
        cols = genes.colmaps[sample][counts.indices]
        keep = (cols >= 0) & (counts.data != 0)
        n_cells_detected += np.bincount(cols[keep], minlength=genes.n_universe)
        n_cells[sample] = counts.shape[0]
        del counts, cols, keep
    return n_cells_detected, n_cells


def _fill_counts(
    paths: Mapping[str, Path],
    colmaps: Mapping[str, np.ndarray],
    final_index: np.ndarray,
    *,
    shape: tuple[int, int],
    nnz: int,
    sheet: Mapping[str, Mapping],
) -> tuple[sp.csr_matrix, list[pd.DataFrame], dict[str, dict]]:
    """Pass 2: fill preallocated CSR arrays one sample at a time; read each sample's obs and QC uns.

    Returns (the merged counts, the samples' obs, {qc_thresholds / qc_status: {sample: record}}).
    """
    n_obs, n_genes = shape
    index_dtype = np.int32 if max(nnz, n_genes) < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=index_dtype)
    indptr = np.zeros(n_obs + 1, dtype=index_dtype)
    obs_frames = []
    qc_uns: dict[str, dict] = {}
    row0 = 0
    pos0 = 0
    for sample, path in paths.items():
        counts = _read_counts(path)
        n = counts.shape[0]
        # sample gene -> cohort gene (or -1), as the index dtype to keep temporaries small
        sample_to_final = colmaps[sample].copy()
        inside = sample_to_final >= 0
        sample_to_final[inside] = final_index[sample_to_final[inside]]
        cols = sample_to_final.astype(index_dtype)[counts.indices]
        keep = (cols >= 0) & (counts.data != 0)
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        row_nnz = kept_before[counts.indptr[1:]] - kept_before[counts.indptr[:-1]]
        del kept_before
        end = pos0 + int(row_nnz.sum())
        np.compress(keep, counts.data, out=data[pos0:end])
        np.compress(keep, cols, out=indices[pos0:end])
        del counts, cols, keep
        indptr[row0 + 1 : row0 + n + 1] = pos0 + np.cumsum(row_nnz)
        # genes must be sorted within each row; they are unless the sample lists genes in another
        # order than the cohort, and only then is the block copied and sorted
        _sort_rows(data[pos0:end], indices[pos0:end], indptr[row0 : row0 + n + 1] - pos0, n_genes)
        row0 += n
        pos0 = end

        obs_frames.append(_sample_obs(path, sample, n, sheet.get(sample, {})))
        uns = read_elem(path, "uns") or {}
        for key in ("qc_thresholds", "qc_status"):
            if key in uns:
                qc_uns.setdefault(key, {})[sample] = uns[key]
    assert row0 == n_obs and pos0 == nnz
    return sp.csr_matrix((data, indices, indptr), shape=shape), obs_frames, qc_uns


def _sort_rows(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_cols: int) -> None:
    """Sort the column indices within each CSR row in place (a no-op when they are sorted)."""
    if len(indices) < 2:
        return
    unsorted = np.diff(indices) <= 0
    boundaries = indptr[1:-1]
    boundaries = boundaries[(boundaries > 0) & (boundaries < len(indices))]
    unsorted[boundaries - 1] = False  # a new row may start with a smaller index
    if not unsorted.any():
        return
    block = sp.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(len(indptr) - 1, n_cols))
    block.sort_indices()
    data[:] = block.data
    indices[:] = block.indices


def _detected_enough(n_cells_detected: np.ndarray, min_cells_per_gene: int) -> np.ndarray:
    """The genes detected in at least `min_cells_per_gene` cells; InputError when there is none."""
    gene_kept = n_cells_detected >= min_cells_per_gene
    LOG.info(
        "%d of %d genes are detected in at least %d cells (cohort.min_cells_per_gene); %d dropped.",
        int(gene_kept.sum()),
        len(n_cells_detected),
        min_cells_per_gene,
        int((~gene_kept).sum()),
    )
    if not gene_kept.any():
        raise InputError(
            f"No gene is detected in at least {min_cells_per_gene} cells of the cohort; "
            "lower cohort.min_cells_per_gene or check the inputs."
        )
    return gene_kept


def _merged_obs(obs_frames: list[pd.DataFrame], *, sample_order: list[str]) -> pd.DataFrame:
    """The samples' obs, one below the other, cell names made unique, tidied (tidy_obs)."""
    obs = pd.concat(obs_frames, axis=0, join="outer", sort=False)
    if obs.index.has_duplicates:
        LOG.warning("Some '<sample>_<barcode>' names collide; they are made unique with a numeric suffix.")
        obs.index = _make_unique(obs.index)
    return tidy_obs(obs, sample_order=sample_order)


def _merged_var(
    genes: GeneSets,
    gene_kept: np.ndarray,
    n_cells_detected: np.ndarray,
    *,
    mt_prefix: str,
    ribo_prefixes: Sequence[str],
) -> pd.DataFrame:
    """var of the merged object: the genes' annotation, n_samples, n_cells_detected, mt, ribo."""
    universe_codes = np.flatnonzero(genes.in_universe)[gene_kept]
    var = pd.DataFrame(
        [genes.gene_rows[c] for c in universe_codes],
        columns=["var_name", "gene_id", "gene_symbol", "feature_types", "mt", "ribo"],
    )
    var["n_samples"] = genes.n_samples_with[universe_codes]
    var["n_cells_detected"] = n_cells_detected[gene_kept]
    # MT/ribosomal flags: the per-sample QC's var columns when every gene has them, else from symbols.
    if var[["mt", "ribo"]].isna().any().any():
        var["mt"], var["ribo"] = mito_ribo_flags(
            var["gene_symbol"], mt_prefix=mt_prefix, ribo_prefixes=ribo_prefixes
        )
    var["mt"] = var["mt"].astype(bool)
    var["ribo"] = var["ribo"].astype(bool)
    var.index = _make_unique(pd.Index(var.pop("var_name").astype(str)))
    return var


# --------------------------------------------------------------------------------------------
# The merge
# --------------------------------------------------------------------------------------------
def merge_samples(
    paths: Mapping[str, str | Path],
    *,
    sheet: pd.DataFrame | Mapping[str, Mapping] | None = None,
    join: str = "inner",
    min_gene_overlap: float = 0.5,
    min_cells_per_gene: int = 0,
    min_samples_kept: int = 1,
    mt_prefix: str = "auto",
    ribo_prefixes: Sequence[str] = ("RPS", "RPL"),
):
    """Merge per-sample filtered.h5ad files into one AnnData of raw counts (CSR float32).

    paths: sample id -> filtered.h5ad, in the order the samples should appear.
    sheet: sample-sheet rows (DataFrame indexed by sample, or {sample: {column: value}}); every
        column is written to obs (as strings), overriding what the file's obs holds.
    join: "inner" keeps genes (matched on var gene_id) present in every sample, "outer" keeps all
        (absent genes count zero).
    min_gene_overlap: InputError when the genes shared by all samples are fewer than this fraction
        of the smallest sample's genes (another species or reference); 0 disables the check.
    min_cells_per_gene: genes detected in fewer cells of the whole cohort are dropped.
    min_samples_kept: InputError when fewer samples (at most all of them) are left after dropping
        those QC dropped.

    Returns an AnnData with X the counts, obs the samples' obs (see tidy_obs) named
    "<sample>_<barcode>", var gene_id, gene_symbol, feature_types, mt, ribo, n_samples,
    n_cells_detected, uns["cohort_merge"] (gene and cell counts of the merge) and the per-sample
    QC records uns["qc_thresholds"] and uns["qc_status"] keyed by sample.

    Memory: each file is read twice, one at a time: the first pass counts the entries each sample
    contributes, the second fills preallocated arrays, so the peak is about the merged matrix plus
    one sample.
    """
    import anndata as ad

    if join not in ("inner", "outer"):
        raise InputError(f"config: cohort.join is {join!r}; use 'inner' or 'outer'.")
    if not paths:
        raise InputError("No samples to merge: every sample was dropped before the cohort stage.")
    paths, dropped = _without_dropped({str(s): Path(p) for s, p in paths.items()}, min_samples_kept)
    if isinstance(sheet, pd.DataFrame):
        sheet = {str(s): row.to_dict() for s, row in sheet.iterrows()}
    sheet = {str(s): dict(row) for s, row in (sheet or {}).items()}

    genes = gene_sets(paths, join=join, min_gene_overlap=min_gene_overlap)
    n_cells_detected, n_cells = _detections(paths, genes)
    gene_kept = _detected_enough(n_cells_detected, min_cells_per_gene)
    final_index = np.full(genes.n_universe, -1, dtype=np.int64)
    final_index[gene_kept] = np.arange(int(gene_kept.sum()))
    n_genes = int(gene_kept.sum())
    nnz_total = int(n_cells_detected[gene_kept].sum())
    n_obs = int(sum(n_cells.values()))
    matrix, obs_frames, qc_uns = _fill_counts(
        paths, genes.colmaps, final_index, shape=(n_obs, n_genes), nnz=nnz_total, sheet=sheet
    )

    obs = _merged_obs(obs_frames, sample_order=list(paths))
    var = _merged_var(genes, gene_kept, n_cells_detected, mt_prefix=mt_prefix, ribo_prefixes=ribo_prefixes)
    adata = ad.AnnData(X=matrix, obs=obs, var=var)
    adata.uns["cohort_merge"] = {
        "join": join,
        "samples": list(paths),
        "dropped_samples": dropped,
        "n_cells": [int(n_cells[s]) for s in paths],
        "n_genes_per_sample": [int(genes.n_genes_per_sample[s]) for s in paths],
        "n_genes_union": int(genes.n_union),
        "n_genes_common": genes.n_common,
        "n_genes_dropped_by_join": int(genes.n_union - genes.n_universe),
        "n_genes_dropped_min_cells": int((~gene_kept).sum()),
        "n_genes": n_genes,
    }
    for key, per_sample in qc_uns.items():  # the per-sample QC records, keyed by sample
        adata.uns[key] = clean_for_uns(per_sample)
    LOG.info(
        "Merged %d cells x %d genes (%d stored counts) from %d samples.",
        n_obs,
        n_genes,
        nnz_total,
        len(paths),
    )
    return adata


# --------------------------------------------------------------------------------------------
# obs and uns tidying
# --------------------------------------------------------------------------------------------
def _make_unique(index: pd.Index) -> pd.Index:
    from anndata.utils import make_index_unique

    return make_index_unique(pd.Index(index.astype(str)))


def tidy_obs(obs: pd.DataFrame, *, sample_order: list[str]) -> pd.DataFrame:
    """Sheet columns and other text columns become categoricals (sample in sheet order).

    In place (and returned): sample is categorical in `sample_order`; condition, donor and batch
    categorical in order of appearance; barcode stays text; columns of booleans (with missing
    values, after the concatenation) become pandas' nullable boolean; other text columns
    categorical with missing values as "NA".
    """
    for column in obs.columns:
        series = obs[column]
        if column == "sample":
            obs[column] = pd.Categorical(series.astype(str), categories=sample_order)
        elif column in SHEET_CATEGORICALS:
            values = series.astype(str)
            obs[column] = pd.Categorical(values, categories=list(dict.fromkeys(values)))
        elif column == "barcode":
            obs[column] = series.astype(str)
        elif series.dtype == object or isinstance(series.dtype, pd.CategoricalDtype):
            non_null = series.dropna()
            if len(non_null) and non_null.map(lambda v: isinstance(v, bool | np.bool_)).all():
                obs[column] = series.astype("boolean")
            else:
                obs[column] = pd.Categorical(series.astype(str).where(series.notna(), "NA"))
    return obs


def clean_for_uns(value):
    """Make a nested structure writable to .h5ad: tuples -> lists, mixed lists -> {index: value},
    numpy scalars -> python, paths -> str (None is kept: anndata 0.12 writes it)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): clean_for_uns(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [clean_for_uns(v) for v in value]
        if items and all(isinstance(v, str) for v in items):
            return items
        if items and all(isinstance(v, bool | int | float) for v in items):
            return items
        return {str(i): v for i, v in enumerate(items)} if items else []
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
