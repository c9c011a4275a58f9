"""Cohort stage: merge the per-sample filtered counts, normalise, select highly variable genes, PCA,
Harmony, kNN graph, UMAP, Leiden clustering and marker genes.

Every function works on an AnnData (or the files the per-sample stage wrote) and never densifies a
cells x genes matrix: counts stay CSR float32 from the merge to the end, PCA runs on the sparse
matrix of the highly variable genes with implicit centring.

Names other stages rely on
--------------------------
- obs names of the merged object are ``"<sample>_<barcode>"`` (:func:`cell_name`); the original
  barcode is kept in ``obs["barcode"]``.
- Leiden columns are named by :func:`leiden_key` (``leiden_0.25``, ``leiden_0.5``, ``leiden_1.0``).
- ``uns["cohort"]["integrated_rep"]`` names the embedding the graph was built on
  (``X_pca_harmony``, or ``X_pca`` when integration is ``none`` or impossible).
- ``uns["cohort"]["default_cluster_key"]`` is the Leiden column used downstream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError

LOG = logging.getLogger("sccohort")

GENE_EXPRESSION = "Gene Expression"
# obs columns of the sample sheet that are always categorical in the merged object.
SHEET_CATEGORICALS = ("sample", "condition", "donor", "batch")


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------
def format_resolution(resolution: float) -> str:
    """The text form of a Leiden resolution used in column and file names.

    Shortest round-trip decimal with at least one digit after the point:
    0.25 -> "0.25", 0.5 -> "0.5", 1 -> "1.0", 1.0 -> "1.0", 2 -> "2.0", 0.1 -> "0.1".
    (Python's ``repr(float(resolution))``; very small or large values use its exponent form.)
    """
    value = float(resolution)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"Leiden resolution {resolution!r} must be a positive number.")
    return repr(value)


def leiden_key(resolution: float) -> str:
    """obs column holding the Leiden clusters at `resolution`: ``"leiden_" + format_resolution(res)``.

    >>> [leiden_key(r) for r in (0.25, 0.5, 1, 1.0)]
    ['leiden_0.25', 'leiden_0.5', 'leiden_1.0', 'leiden_1.0']
    """
    return f"leiden_{format_resolution(resolution)}"


def cell_name(sample: str, barcode: str) -> str:
    """Unique cell id in the merged object: ``"<sample>_<barcode>"``."""
    return f"{sample}_{barcode}"


# --------------------------------------------------------------------------------------------
# Gene flags
# --------------------------------------------------------------------------------------------
def mito_ribo_flags(
    symbols: Sequence[str], mt_prefix: str = "auto", ribo_prefixes: Sequence[str] = ("RPS", "RPL")
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of mitochondrial and ribosomal-protein genes from their symbols.

    Same rule as the per-sample QC: MT genes start with `mt_prefix` ("auto": "MT-" or "mt-"),
    ribosomal genes with one of `ribo_prefixes` (case-insensitive, so mouse Rps/Rpl match too).
    """
    symbols = pd.Index([str(s) for s in symbols])
    prefixes = ("MT-", "mt-") if mt_prefix in (None, "", "auto") else (str(mt_prefix),)
    mt = np.zeros(len(symbols), dtype=bool)
    for prefix in prefixes:
        mt |= np.asarray(symbols.str.startswith(prefix), dtype=bool)
    upper = symbols.str.upper()
    ribo = np.zeros(len(symbols), dtype=bool)
    for prefix in ribo_prefixes or ():
        ribo |= np.asarray(upper.str.startswith(str(prefix).upper()), dtype=bool)
    return mt, ribo & ~mt


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------
def _read_elem(path: Path, key: str):
    import h5py
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                return None
            return read_elem(handle[key])
    except OSError as exc:
        raise InputError(
            f"Cannot read {path} as an .h5ad file ({exc}); re-run the QC stage for it."
        ) from None


def _read_counts(path: Path) -> sp.csr_matrix:
    matrix = _read_elem(path, "X")
    if matrix is None:
        raise InputError(f"{path} has no X matrix; it must hold raw counts (re-run the QC stage).")
    if not sp.issparse(matrix):
        matrix = sp.csr_matrix(np.asarray(matrix))
    matrix = sp.csr_matrix(matrix)
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    matrix.sum_duplicates()
    return matrix


def _sample_genes(path: Path, sample: str) -> pd.DataFrame:
    """One sample's genes: key (gene id), var_name, gene_symbol, feature_types, position in X."""
    var = _read_elem(path, "var")
    if var is None or len(var) == 0:
        raise InputError(f"{path} (sample {sample!r}) has no genes in var.")
    names = pd.Index(var.index.astype(str))
    table = pd.DataFrame(
        {
            "position": np.arange(len(var)),
            "var_name": names,
            "gene_id": var["gene_id"].astype(str).to_numpy() if "gene_id" in var else names,
            "gene_symbol": var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in var else names,
            "feature_types": (
                var["feature_types"].astype(str).to_numpy() if "feature_types" in var else GENE_EXPRESSION
            ),
        }
    )
    for flag in ("mt", "ribo"):
        if flag in var and var[flag].dtype == bool:
            table[flag] = var[flag].to_numpy()
    table["key"] = table["gene_id"]
    duplicated = table["key"].duplicated(keep=False)
    if duplicated.any():
        # Ids repeated within one file (e.g. symbols used as ids): fall back to the unique var name.
        LOG.warning(
            "%s: %d genes share a gene_id with another gene (e.g. %s); they are matched by var name.",
            sample,
            int(duplicated.sum()),
            table.loc[duplicated, "key"].iloc[0],
        )
        table.loc[duplicated, "key"] = table.loc[duplicated, "var_name"]
    other = table["feature_types"] != GENE_EXPRESSION
    if other.any() and (~other).any():
        LOG.info(
            "%s: %d features that are not %r (%s) are left out of the cohort.",
            sample,
            int(other.sum()),
            GENE_EXPRESSION,
            ", ".join(sorted(table.loc[other, "feature_types"].unique())),
        )
        table = table.loc[~other]
    table = table.reset_index(drop=True)
    table.attrs["n_features"] = len(var)
    return table


def _overlap_report(sample_codes: dict[str, np.ndarray], n_samples_with: np.ndarray) -> str:
    """Per sample: the share of its genes found in at least half of the other samples."""
    others = len(sample_codes) - 1
    if others < 1:
        return ""
    shares = {}
    for name, positions in sample_codes.items():
        codes = positions[positions >= 0]
        shares[name] = float(np.mean(n_samples_with[codes] - 1 >= others / 2)) if len(codes) else 0.0
    ordered = sorted(shares.items(), key=lambda item: item[1])
    return "; ".join(f"{name}: {share:.0%}" for name, share in ordered)


def gene_codes(gene_ids: Mapping[str, Sequence[str]]) -> tuple[dict[str, np.ndarray], int]:
    """Code genes by first appearance across samples: ({sample: code per gene}, number of genes)."""
    code_of: dict[str, int] = {}
    sample_codes = {}
    for sample, ids in gene_ids.items():
        sample_codes[sample] = np.array([code_of.setdefault(g, len(code_of)) for g in ids], dtype=np.int64)
    return sample_codes, len(code_of)


def check_gene_overlap(
    sample_codes: Mapping[str, np.ndarray], n_union: int, min_gene_overlap: float
) -> np.ndarray:
    """Raise InputError when the genes shared by all samples are fewer than `min_gene_overlap`
    times the smallest sample's genes (another species or reference); else return, per gene
    code, the number of samples holding it. Codes < 0 (features left out) are ignored.

    Run on the input files' gene lists when the DAG is built and again on the filtered files
    by the merge.
    """
    n_samples_with = np.zeros(n_union, dtype=np.int64)
    n_genes = {}
    for sample, positions in sample_codes.items():
        codes = np.unique(positions[positions >= 0])
        n_samples_with[codes] += 1
        n_genes[sample] = len(codes)
    n_common = int((n_samples_with == len(sample_codes)).sum())
    if len(sample_codes) < 2 or not n_genes:
        return n_samples_with
    smallest = min(n_genes, key=n_genes.get)
    n_smallest = n_genes[smallest]
    if n_common < min_gene_overlap * n_smallest:
        raise InputError(
            f"The {len(sample_codes)} samples share only {n_common} genes (by gene id), "
            f"{n_common / max(n_smallest, 1):.1%} of the {n_smallest} genes of the smallest sample "
            f"{smallest!r}; cohort.min_gene_overlap is {min_gene_overlap}. Samples with the lowest share of "
            f"genes found in most other samples come first: {_overlap_report(sample_codes, n_samples_with)}. "
            "Check that all samples were quantified against the same species and reference (Ensembl ids vs "
            "symbols), or lower cohort.min_gene_overlap."
        )
    return n_samples_with


def merge_samples(
    paths: Mapping[str, str | Path],
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

    Memory: each file is read twice, one at a time: the first pass counts the entries each sample
    contributes, the second fills preallocated arrays, so the peak is about the merged matrix plus
    one sample.
    """
    import anndata as ad

    if join not in ("inner", "outer"):
        raise InputError(f"config: cohort.join is {join!r}; use 'inner' or 'outer'.")
    if not paths:
        raise InputError("No samples to merge: every sample was dropped before the cohort stage.")
    paths = {str(s): Path(p) for s, p in paths.items()}
    dropped = [s for s, p in paths.items() if _dropped_by_qc(p)]
    if dropped:
        LOG.warning(
            "Samples dropped by QC (qc.failed_sample_policy: drop) are left out of the cohort: %s.",
            ", ".join(dropped),
        )
        needed = min(int(min_samples_kept), len(paths))
        paths = {s: p for s, p in paths.items() if s not in dropped}
        if len(paths) < max(needed, 1):
            raise InputError(
                f"QC dropped {len(dropped)} of {len(paths) + len(dropped)} samples ({', '.join(dropped)}), "
                f"leaving {len(paths)}; qc.min_samples_kept is {min_samples_kept}. Check the per-sample QC "
                "reports (results/qc/<sample>/report.html), loosen the QC thresholds or min_cells_after_qc, "
                "or remove the failed samples from the sheet."
            )
    if isinstance(sheet, pd.DataFrame):
        sheet = {str(s): row.to_dict() for s, row in sheet.iterrows()}
    sheet = {str(s): dict(row) for s, row in (sheet or {}).items()}

    # Pass 0: gene sets (var only). Genes are coded by first appearance (the union's order); per
    # sample only an int array is kept (feature position -> gene code, -1 for features left out),
    # so memory does not grow with samples x genes of Python strings.
    code_of: dict[str, int] = {}
    gene_rows: list[tuple] = []  # annotation of each gene from the first sample holding it
    sample_codes: dict[str, np.ndarray] = {}
    n_features: dict[str, int] = {}
    n_genes_per_sample: dict[str, int] = {}
    for sample, path in paths.items():
        table = _sample_genes(path, sample)
        has_flags = {"mt", "ribo"} <= set(table.columns)
        codes = np.empty(len(table), dtype=np.int64)
        for i, row in enumerate(table.itertuples(index=False)):
            code = code_of.get(row.key)
            if code is None:
                code = code_of[row.key] = len(code_of)
                flags = (bool(row.mt), bool(row.ribo)) if has_flags else (None, None)
                gene_rows.append((row.var_name, row.gene_id, row.gene_symbol, row.feature_types, *flags))
            codes[i] = code
        n_features[sample] = int(table.attrs["n_features"])
        positions = np.full(n_features[sample], -1, dtype=np.int64)
        positions[table["position"].to_numpy()] = codes
        sample_codes[sample] = positions
        n_genes_per_sample[sample] = len(table)
        del table
    n_union = len(code_of)
    n_samples_with = check_gene_overlap(sample_codes, n_union, min_gene_overlap)
    in_all = n_samples_with == len(paths)
    n_common = int(in_all.sum())
    in_universe = in_all if join == "inner" else np.ones(n_union, dtype=bool)
    universe_index = np.full(n_union, -1, dtype=np.int64)  # gene code -> position in the universe
    universe_index[in_universe] = np.arange(int(in_universe.sum()))
    n_universe = int(in_universe.sum())
    LOG.info(
        "Gene sets: %d genes in the union, %d in every sample; %s join keeps %d (%d dropped by the join).",
        n_union,
        n_common,
        join,
        n_universe,
        n_union - n_universe,
    )
    colmaps: dict[str, np.ndarray] = {}  # sample feature position -> universe position, or -1
    for sample, positions in sample_codes.items():
        colmap = np.where(positions >= 0, universe_index[np.maximum(positions, 0)], -1)
        colmaps[sample] = colmap
        LOG.info(
            "%s: %d genes, %d of them in the merged gene set.",
            sample,
            n_genes_per_sample[sample],
            int((colmap >= 0).sum()),
        )
    del sample_codes, code_of

    # Pass 1: detection counts per gene and entries per sample.
    detected = {}
    n_cells = {}
    for sample, path in paths.items():
        counts = _read_counts(path)
        if counts.shape[1] != n_features[sample]:
            raise InputError(f"{path}: X has {counts.shape[1]} genes but var lists {n_features[sample]}.")
        if counts.nnz and counts.data.min() < 0:
            raise InputError(
                f"{path} (sample {sample!r}) has negative values in X; the cohort stage needs raw counts."
            )
        if counts.nnz and not np.array_equal(counts.data, np.round(counts.data)):
            LOG.warning("%s: X holds non-integer values; raw integer counts are expected.", sample)
        cols = colmaps[sample][counts.indices]
        keep = (cols >= 0) & (counts.data != 0)
        detected[sample] = np.bincount(cols[keep], minlength=n_universe)
        n_cells[sample] = counts.shape[0]
        del counts, cols, keep
    n_cells_detected = np.sum(list(detected.values()), axis=0)
    gene_kept = n_cells_detected >= min_cells_per_gene
    LOG.info(
        "%d of %d genes are detected in at least %d cells (cohort.min_cells_per_gene); %d dropped.",
        int(gene_kept.sum()),
        n_universe,
        min_cells_per_gene,
        int((~gene_kept).sum()),
    )
    if not gene_kept.any():
        raise InputError(
            f"No gene is detected in at least {min_cells_per_gene} cells of the cohort; "
            "lower cohort.min_cells_per_gene or check the inputs."
        )
    final_index = np.full(n_universe, -1, dtype=np.int64)
    final_index[gene_kept] = np.arange(int(gene_kept.sum()))
    n_genes = int(gene_kept.sum())
    nnz_total = int(sum(int(d[gene_kept].sum()) for d in detected.values()))
    n_obs = int(sum(n_cells.values()))
    index_dtype = np.int32 if max(nnz_total, n_genes) < np.iinfo(np.int32).max else np.int64

    # Pass 2: fill preallocated CSR arrays one sample at a time.
    data = np.empty(nnz_total, dtype=np.float32)
    indices = np.empty(nnz_total, dtype=index_dtype)
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
        block_nnz = int(row_nnz.sum())
        end = pos0 + block_nnz
        np.compress(keep, counts.data, out=data[pos0:end])
        np.compress(keep, cols, out=indices[pos0:end])
        del counts, cols, keep
        indptr[row0 + 1 : row0 + n + 1] = pos0 + np.cumsum(row_nnz)
        # genes must be sorted within each row; they are unless the sample lists genes in another
        # order than the cohort, and only then is the block copied and sorted
        _sort_rows(data[pos0:end], indices[pos0:end], indptr[row0 : row0 + n + 1] - pos0, n_genes)
        row0 += n
        pos0 = end

        obs = _read_elem(path, "obs")
        if obs is None or len(obs) != n:
            raise InputError(f"{path}: obs has {0 if obs is None else len(obs)} rows but X has {n} cells.")
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
        for column, value in sheet.get(sample, {}).items():
            if column == "path":
                continue
            obs[column] = "" if value is None else str(value)
        obs["sample"] = sample
        obs.index = pd.Index([cell_name(sample, b) for b in barcodes])
        obs_frames.append(obs)
        uns = _read_elem(path, "uns") or {}
        for key in ("qc_thresholds", "qc_status"):
            if key in uns:
                qc_uns.setdefault(key, {})[sample] = uns[key]
    assert row0 == n_obs and pos0 == nnz_total

    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_obs, n_genes))
    obs = pd.concat(obs_frames, axis=0, join="outer", sort=False)
    if obs.index.has_duplicates:
        LOG.warning("Some '<sample>_<barcode>' names collide; they are made unique with a numeric suffix.")
        obs.index = _make_unique(obs.index)
    obs = _tidy_obs(obs, sample_order=list(paths))

    universe_codes = np.flatnonzero(in_universe)
    var = pd.DataFrame(
        [gene_rows[c] for c in universe_codes[gene_kept]],
        columns=["var_name", "gene_id", "gene_symbol", "feature_types", "mt", "ribo"],
    )
    var["n_samples"] = n_samples_with[universe_codes[gene_kept]]
    var["n_cells_detected"] = n_cells_detected[gene_kept]
    # MT/ribosomal flags: the per-sample QC's var columns when every gene has them, else from symbols.
    if var[["mt", "ribo"]].isna().any().any():
        var["mt"], var["ribo"] = mito_ribo_flags(var["gene_symbol"], mt_prefix, ribo_prefixes)
    var["mt"] = var["mt"].astype(bool)
    var["ribo"] = var["ribo"].astype(bool)
    var.index = _make_unique(pd.Index(var.pop("var_name").astype(str)))

    adata = ad.AnnData(X=matrix, obs=obs, var=var)
    adata.uns["cohort_merge"] = {
        "join": join,
        "samples": list(paths),
        "dropped_samples": dropped,
        "n_cells": [int(n_cells[s]) for s in paths],
        "n_genes_per_sample": [int(n_genes_per_sample[s]) for s in paths],
        "n_genes_union": int(n_union),
        "n_genes_common": n_common,
        "n_genes_dropped_by_join": int(n_union - n_universe),
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


def _dropped_by_qc(path: Path) -> bool:
    """True when the per-sample stage marked the sample dropped (uns["qc_status"]["dropped"])."""
    import h5py
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as handle:
            if "uns/qc_status/dropped" not in handle:
                return False
            return bool(read_elem(handle["uns/qc_status/dropped"]))
    except OSError as exc:
        raise InputError(
            f"Cannot read {path} as an .h5ad file ({exc}); re-run the QC stage for it."
        ) from None


def _make_unique(index: pd.Index) -> pd.Index:
    from anndata.utils import make_index_unique

    return make_index_unique(pd.Index(index.astype(str)))


def _tidy_obs(obs: pd.DataFrame, sample_order: list[str]) -> pd.DataFrame:
    """Sheet columns and other text columns become categoricals (sample in sheet order)."""
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


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------
def normalise(adata, target_sum: float = 1e4) -> None:
    """Keep raw counts in layers["counts"]; X becomes log1p(counts / total * target_sum), CSR float32.

    In place, without densifying. Cells with no counts stay all-zero.
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


# --------------------------------------------------------------------------------------------
# Highly variable genes
# --------------------------------------------------------------------------------------------
def _mean_var(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof=1, like scanpy) of a sparse matrix, in float64."""
    n = matrix.shape[0]
    sums = np.bincount(matrix.indices, weights=matrix.data, minlength=matrix.shape[1])
    sq = np.bincount(
        matrix.indices, weights=np.square(matrix.data, dtype=np.float64), minlength=matrix.shape[1]
    )
    mean = sums / n
    var = (sq / n - mean**2) * (n / max(n - 1, 1))
    return mean, np.maximum(var, 0)


def hvg_batches(labels: pd.Series | None, min_cells: int) -> tuple[np.ndarray | None, dict]:
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


def _seurat_v3_hvg(adata, n_top: int, codes: np.ndarray | None, eligible: np.ndarray) -> pd.DataFrame:
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


def highly_variable_genes(
    adata,
    n_top_genes: int = 2000,
    flavor: str = "seurat_v3",
    batch_key: str | None = "sample",
    exclude: np.ndarray | None = None,
    min_batch_cells: int = 50,
) -> pd.DataFrame:
    """Select highly variable genes; writes var columns highly_variable (+ statistics).

    seurat_v3 (default) is scanpy's, on layers["counts"] (its loess trend needs scikit-misc);
    seurat and cell_ranger are scanpy's on X.
    With `batch_key`, batches smaller than `min_batch_cells` cells are pooled (see hvg_batches).
    Genes in `exclude` (e.g. MT and ribosomal) are never selected; for seurat_v3 they are also
    left out of the trend fit, so the result equals selecting on the other genes alone.
    """
    n_genes = adata.n_vars
    eligible = np.ones(n_genes, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    n_top = int(min(n_top_genes, eligible.sum()))
    labels = None
    if batch_key is not None:
        if batch_key not in adata.obs:
            raise InputError(f"cohort.hvg_batch_key {batch_key!r} is not an obs column of the merged cohort.")
        labels = adata.obs[batch_key]
    codes, summary = hvg_batches(labels, min_batch_cells)
    if summary.get("pooled"):
        LOG.warning(
            "HVG: batches with fewer than %d cells (%s) are %s.",
            min_batch_cells,
            ", ".join(summary["pooled"]),
            "left out" if summary.get("ignored") else "pooled into one group",
        )
    if flavor == "seurat_v3":
        df = _seurat_v3_hvg(adata, n_top, codes, eligible)
    elif flavor in ("seurat", "cell_ranger"):
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
        df = df.drop(columns=[c for c in ("highly_variable_intersection",) if c in df])
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


# --------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------
def run_pca(adata, n_comps: int = 50, scale: bool = True, seed: int = 0) -> None:
    """PCA on the highly variable genes of X (log-normalised), sparse with implicit centring.

    scale=True divides each gene by its standard deviation first (unit variance; sparsity is kept
    because centring stays implicit; unlike sc.pp.scale there is no clipping). Uses scanpy's pca
    (sklearn PCA, arpack, seeded). Writes obsm["X_pca"] (float32), varm["PCs"], uns["pca"].
    """
    import scanpy as sc

    mask = adata.var["highly_variable"].to_numpy(dtype=bool) if "highly_variable" in adata.var else None
    X = adata.X[:, mask] if mask is not None else adata.X
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    if scale:
        _, var = _mean_var(X)
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


# --------------------------------------------------------------------------------------------
# Harmony, graph, UMAP, Leiden
# --------------------------------------------------------------------------------------------
def run_harmony(
    adata,
    batch_keys: Sequence[str] = ("sample",),
    seed: int = 0,
    theta: float = 2.0,
    max_iter: int = 10,
    threads: int = 1,
) -> bool:
    """Harmony on obsm["X_pca"] (harmonypy.run_harmony, called directly) -> obsm["X_pca_harmony"].

    Batch keys with a single level are ignored; returns False (and writes nothing) when no key
    has two levels.
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


def build_graph(
    adata, use_rep: str, n_neighbors: int = 15, seed: int = 0, key_added: str | None = None
) -> None:
    """kNN graph (scanpy neighbours: pynndescent/umap connectivities) on obsm[use_rep]."""
    import scanpy as sc

    k = int(min(n_neighbors, adata.n_obs - 1))
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, random_state=seed, key_added=key_added)


def run_umap(
    adata, neighbors_key: str = "neighbors", key_added: str = "X_umap", seed: int = 0, min_dist: float = 0.5
) -> None:
    import scanpy as sc

    sc.tl.umap(adata, random_state=seed, neighbors_key=neighbors_key, key_added=key_added, min_dist=min_dist)


def run_leiden(
    adata, resolutions: Sequence[float], seed: int = 0, neighbors_key: str = "neighbors"
) -> list[str]:
    """Leiden (igraph flavour, 2 iterations, undirected) at each resolution -> obs leiden_<res>.

    Clusters are numbered "0", "1", ... by decreasing size (scanpy's convention).
    """
    import scanpy as sc

    keys = []
    for resolution in resolutions:
        key = leiden_key(resolution)
        sc.tl.leiden(
            adata,
            resolution=float(resolution),
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
            key_added=key,
            neighbors_key=neighbors_key,
        )
        LOG.info(
            "Leiden at resolution %s: %d clusters.", format_resolution(resolution), adata.obs[key].nunique()
        )
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------
# The stage as the rules run it
# --------------------------------------------------------------------------------------------
# Defaults of the `cohort:` config block (workflow/schemas/config.schema.yaml holds the same values;
# tests/test_cohort.py checks that they agree).
DEFAULTS = {
    "join": "inner",
    "min_gene_overlap": 0.5,
    "min_cells_per_gene": 3,
    "target_sum": 10000,
    "n_top_genes": 2000,
    "hvg_flavor": "seurat_v3",
    "hvg_batch_key": "sample",
    "hvg_exclude_mt_ribo": True,
    "hvg_min_batch_cells": 50,
    "n_pcs": 50,
    "pca_scale": False,
    "integration": "harmony",
    "batch_keys": ["sample"],
    "harmony_theta": 2.0,
    "harmony_max_iter": 10,
    "n_neighbors": 15,
    "umap_min_dist": 0.5,
    "leiden_resolutions": [0.25, 0.5, 1.0],
    "default_resolution": 0.5,
    "n_marker_genes": 25,
    "marker_min_pct": 0.1,
}
UNCORRECTED_NEIGHBORS = "neighbors_uncorrected"
UNCORRECTED_UMAP = "X_umap_pca"


def cohort_params(params: Mapping | None = None) -> dict:
    """The cohort config block completed with DEFAULTS."""
    merged = {**DEFAULTS, **dict(params or {})}
    if isinstance(merged["batch_keys"], str):
        merged["batch_keys"] = [merged["batch_keys"]]
    resolutions = [float(r) for r in merged["leiden_resolutions"]]
    if float(merged["default_resolution"]) not in resolutions:
        raise InputError(
            f"config: cohort.default_resolution {merged['default_resolution']} is not one of "
            f"cohort.leiden_resolutions {resolutions}; add it to the list or pick one of them."
        )
    return merged


def prepare_cohort(
    paths: Mapping[str, str | Path],
    sheet=None,
    params: Mapping | None = None,
    qc_params: Mapping | None = None,
    seed: int = 0,
):
    """Merge, normalise, select HVGs and run PCA (the first cohort rule). Returns the AnnData."""
    p = cohort_params(params)
    qc_params = dict(qc_params or {})
    adata = merge_samples(
        paths,
        sheet,
        join=p["join"],
        min_gene_overlap=float(p["min_gene_overlap"]),
        min_cells_per_gene=int(p["min_cells_per_gene"]),
        min_samples_kept=int(qc_params.get("min_samples_kept", 1)),
        mt_prefix=qc_params.get("mt_prefix", "auto"),
        ribo_prefixes=qc_params.get("ribo_prefixes", ("RPS", "RPL")),
    )
    exclude = (adata.var["mt"] | adata.var["ribo"]).to_numpy() if p["hvg_exclude_mt_ribo"] else None
    hvg = {
        "n_top_genes": int(p["n_top_genes"]),
        "flavor": p["hvg_flavor"],
        "batch_key": p["hvg_batch_key"],
        "exclude": exclude,
        "min_batch_cells": int(p["hvg_min_batch_cells"]),
    }
    # seurat_v3 works on the raw counts: selecting before normalising keeps its temporary copy of
    # the counts and the normalised matrix out of memory at the same time (the merge's peak).
    if p["hvg_flavor"] == "seurat_v3":
        highly_variable_genes(adata, **hvg)
    normalise(adata, float(p["target_sum"]))
    if p["hvg_flavor"] != "seurat_v3":  # seurat and cell_ranger work on log-normalised X
        highly_variable_genes(adata, **hvg)
    run_pca(adata, int(p["n_pcs"]), scale=bool(p["pca_scale"]), seed=int(seed))
    adata.uns["cohort"] = {
        "parameters": clean_for_uns(p),
        "seed": int(seed),
        "merge": adata.uns.pop("cohort_merge"),
    }
    return adata


def embed_uncorrected(adata, params: Mapping | None = None, seed: int = 0) -> None:
    """kNN graph and UMAP of the uncorrected PCs: the "before integration" side of the diagnostics.

    Writes obsp["neighbors_uncorrected_distances" / "_connectivities"] and obsm["X_umap_pca"].
    The workflow runs this in its own job (cohort_uncorrected) beside cohort_cluster, so the two
    graphs and UMAPs, each single-threaded, are computed at the same time on two cores.
    """
    p = cohort_params(params)
    build_graph(adata, "X_pca", int(p["n_neighbors"]), int(seed), key_added=UNCORRECTED_NEIGHBORS)
    run_umap(adata, UNCORRECTED_NEIGHBORS, UNCORRECTED_UMAP, int(seed), float(p["umap_min_dist"]))


def add_uncorrected(adata, uncorrected) -> None:
    """Copy embed_uncorrected's graph and UMAP (from cohort_uncorrected's object) into `adata`."""
    if not adata.obs_names.equals(uncorrected.obs_names):
        raise InputError(
            "The uncorrected embedding and the clustered cohort hold different cells; "
            "rerun cohort_uncorrected (snakemake --forcerun cohort_uncorrected)."
        )
    adata.obsm[UNCORRECTED_UMAP] = uncorrected.obsm[UNCORRECTED_UMAP]
    for suffix in ("distances", "connectivities"):
        adata.obsp[f"{UNCORRECTED_NEIGHBORS}_{suffix}"] = uncorrected.obsp[
            f"{UNCORRECTED_NEIGHBORS}_{suffix}"
        ]
    adata.uns[UNCORRECTED_NEIGHBORS] = uncorrected.uns[UNCORRECTED_NEIGHBORS]


def integrate_and_cluster(
    adata, params: Mapping | None = None, seed: int = 0, threads: int = 1, uncorrected: bool = True
) -> None:
    """Harmony (unless integration is none), kNN graph, UMAP and Leiden (the second cohort rule).

    Writes obsm X_pca_harmony (with Harmony), X_umap (on the integrated PCs), the integrated graph
    under obsp["connectivities" / "distances"], obs leiden_<res>, and uns["cohort"] entries naming
    them. With `uncorrected` (and Harmony) also embed_uncorrected's graph and X_umap_pca; the
    workflow passes False and computes those in a job of their own. uns["cohort"] names where the
    uncorrected graph and UMAP are (the integrated ones when there is no integration).
    """
    from .runtime import package_versions

    p = cohort_params(params)
    seed = int(seed)
    integrated = False
    if p["integration"] == "harmony":
        integrated = run_harmony(
            adata,
            p["batch_keys"],
            seed=seed,
            theta=float(p["harmony_theta"]),
            max_iter=int(p["harmony_max_iter"]),
            threads=threads,
        )
    elif p["integration"] != "none":
        raise InputError(f"config: cohort.integration is {p['integration']!r}; use 'harmony' or 'none'.")
    else:
        LOG.info("cohort.integration is none: the graph is built on the uncorrected PCs.")
    rep = "X_pca_harmony" if integrated else "X_pca"
    k = int(p["n_neighbors"])
    if integrated and uncorrected:
        embed_uncorrected(adata, p, seed)
    build_graph(adata, rep, k, seed)
    run_umap(adata, "neighbors", "X_umap", seed, float(p["umap_min_dist"]))
    keys = run_leiden(adata, p["leiden_resolutions"], seed)
    adata.uns["cohort"] = {
        **dict(adata.uns.get("cohort", {})),
        "integration": "harmony" if integrated else "none",
        "integrated_rep": rep,
        "uncorrected_neighbors_key": UNCORRECTED_NEIGHBORS if integrated else "neighbors",
        "uncorrected_umap_key": UNCORRECTED_UMAP if integrated else "X_umap",
        "leiden_keys": keys,
        "default_cluster_key": leiden_key(p["default_resolution"]),
        "versions": package_versions(),
    }


def embedding_table(adata, basis: str = "X_umap") -> pd.DataFrame:
    """barcode (the cohort's cell id), UMAP1, UMAP2 and the sheet and leiden columns, for the report."""
    coords = np.asarray(adata.obsm[basis])
    table = pd.DataFrame({"barcode": adata.obs_names, "UMAP1": coords[:, 0], "UMAP2": coords[:, 1]})
    columns = [c for c in adata.obs.columns if c in SHEET_CATEGORICALS or c.startswith("leiden_")]
    for column in columns:
        table[column] = adata.obs[column].astype(str).to_numpy()
    return table


def read_cohort(path: str | Path, parts: Sequence[str] = ("obs", "var", "obsm", "obsp", "uns")):
    """Read only some parts of an .h5ad (e.g. without X and layers) as an AnnData."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    parts = list(parts)
    if ("X" in parts or "layers" in parts) and "var" not in parts:
        parts.append("var")  # matrices need the gene axis to build a valid AnnData
    with h5py.File(path, "r") as handle:
        elems = {part: read_elem(handle[part]) for part in parts if part in handle}
    obs = elems.pop("obs")
    var = elems.pop("var", None)
    if var is None:  # no genes read: an empty var with a string index (no anndata warning)
        var = pd.DataFrame(index=pd.Index([], dtype=str))
    adata = ad.AnnData(X=elems.pop("X", None), obs=obs, var=var, **{k: v for k, v in elems.items()})
    return adata


def _x_row_blocks(handle, path: Path, chunk_rows: int):
    """(start, CSR block) over the rows of a sparse X in an open .h5ad, `chunk_rows` at a time."""
    import h5py
    from anndata.io import sparse_dataset

    matrix = handle["X"]
    if isinstance(matrix, h5py.Dataset):
        raise InputError(f"{path}: X is dense; the cohort stage writes a sparse X.")
    dataset = sparse_dataset(matrix)
    n_obs = dataset.shape[0]
    for start in range(0, n_obs, chunk_rows):
        yield start, sp.csr_matrix(dataset[start : min(start + chunk_rows, n_obs)])


def _var_names(handle) -> pd.Index:
    from anndata.io import read_elem

    return pd.Index(read_elem(handle["var"]).index.astype(str))


def read_gene_columns(path: str | Path, genes: Sequence[str], chunk_rows: int = 20000) -> sp.csr_matrix:
    """X of an .h5ad restricted to `genes` (var names), read in row chunks.

    Memory stays at one chunk of X plus the result, instead of the whole matrix.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as handle:
        columns = _var_names(handle).get_indexer(pd.Index(genes).astype(str))
        if (columns < 0).any():
            missing = [g for g, c in zip(genes, columns, strict=True) if c < 0]
            raise InputError(f"{path}: genes {', '.join(missing[:5])} are not in var.")
        matrix = handle["X"]
        if isinstance(matrix, h5py.Dataset):  # dense X
            return sp.csr_matrix(matrix[:, np.sort(columns)][:, np.argsort(np.argsort(columns))])
        blocks = [block[:, columns] for _, block in _x_row_blocks(handle, path, chunk_rows)]
    return _stack_rows(blocks, len(genes))


def _stack_rows(blocks: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """sp.vstack of CSR row blocks that frees each block once it is copied (and empties `blocks`).

    The result's arrays fill page by page as the blocks are released, so the peak is about the
    result plus one block instead of twice the result.
    """
    n_rows = sum(block.shape[0] for block in blocks)
    nnz = sum(block.nnz for block in blocks)
    index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=blocks[0].dtype if blocks else np.float32)
    indices = np.empty(nnz, dtype=index_dtype)
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    row = position = 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        data[position : position + block.nnz] = block.data
        indices[position : position + block.nnz] = block.indices
        indptr[row + 1 : row + 1 + block.shape[0]] = block.indptr[1:] + position
        row, position = row + block.shape[0], position + block.nnz
        del block
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols), copy=False)


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------
def detection_by_group(matrix, codes: np.ndarray, n_groups: int, chunk_rows: int = 5000) -> np.ndarray:
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


def marker_test_genes(adata, groupby: str, min_pct: float) -> np.ndarray:
    """Genes (a mask over var) detected in at least `min_pct` of the cells of at least one group."""
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    return _tested_gene_mask(detection_by_group(adata.X, codes, len(labels.categories)), codes, min_pct)


def restrict_to_marker_genes(adata, groupby: str, min_pct: float):
    """`adata` with only the genes marker_test_genes keeps (a copy); `adata` itself when min_pct <= 0."""
    return adata if min_pct <= 0 else adata[:, marker_test_genes(adata, groupby, min_pct)].copy()


def read_marker_genes(path: str | Path, min_pct: float, groupby: str | None = None, chunk_rows: int = 20000):
    """The clustered .h5ad at `path` with X holding only the genes marker_test_genes keeps.

    The same object as read_cohort(path, ("X", "obs", "var", "uns")) passed through
    restrict_to_marker_genes, but X is read twice in row chunks (detection, then the kept genes),
    so the whole matrix is never in memory. `groupby` defaults to uns["cohort"]["default_cluster_key"].
    """
    import anndata as ad
    import h5py

    path = Path(path)
    adata = read_cohort(path, parts=("obs", "var", "uns"))
    groupby = groupby or adata.uns["cohort"]["default_cluster_key"]
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    with h5py.File(path, "r") as handle:
        detected = np.zeros((len(labels.categories), adata.n_vars), dtype=np.int64)
        # smaller chunks than for reading the kept genes: the counting's temporaries scale with them
        for start, block in _x_row_blocks(handle, path, max(1, chunk_rows // 4)):
            detected += _block_detection(block, codes[start : start + block.shape[0]], len(labels.categories))
    keep = _tested_gene_mask(detected, codes, min_pct)
    X = read_gene_columns(path, adata.var_names[keep], chunk_rows=chunk_rows)
    return ad.AnnData(X=X, obs=adata.obs, var=adata.var[keep].copy(), uns=adata.uns)


def wilcoxon_one_vs_rest(adata, groupby: str, groups: Sequence[str], threads: int = 1) -> pd.DataFrame:
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
    from illico import asymptotic_wilcoxon
    from loguru import logger

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
            n_threads=int(threads),
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


def find_markers(
    adata, groupby: str, n_genes: int = 25, min_pct: float = 0.0, threads: int = 1
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
    from scipy.stats import false_discovery_control

    columns = [
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
    sizes = adata.obs[groupby].value_counts()
    groups = [str(g) for g in adata.obs[groupby].cat.categories if sizes.get(g, 0) >= 2]
    if len(groups) < 2 or adata.obs[groupby].nunique() < 2:
        LOG.warning("Markers: fewer than two clusters with 2+ cells; the marker table is empty.")
        return pd.DataFrame(columns=columns)
    labels = adata.obs[groupby].cat
    codes = labels.codes.to_numpy()
    # one count of detections serves both the min_pct gene filter and pct_in / pct_out
    detected = detection_by_group(adata.X, codes, len(labels.categories))
    keep = _tested_gene_mask(detected, codes, min_pct)
    tested = adata if keep.all() else adata[:, keep].copy()
    detected = detected[:, keep]
    stats = wilcoxon_one_vs_rest(tested, groupby, groups, threads=threads)

    group_sizes = np.bincount(codes[codes >= 0], minlength=len(labels.categories))
    n_cells = int(group_sizes.sum())
    gene_position = pd.Index(tested.var_names.astype(str))
    tables = []
    for group in groups:
        table = stats[stats["group"] == group]
        position = gene_position.get_indexer(table["gene"])
        code = labels.categories.get_loc(group)
        table = table.assign(
            pval_adj=false_discovery_control(table["pval"].to_numpy()),
            pct_in=detected[code, position] / group_sizes[code],
            pct_out=(detected[:, position].sum(axis=0) - detected[code, position])
            / (n_cells - group_sizes[code]),
        )
        # highest score first; ties in gene order, so the table does not depend on the test's layout
        order = np.lexsort((position, -table["score"].to_numpy()))[:n_genes]
        tables.append(table.iloc[order].assign(rank=np.arange(1, len(order) + 1)))
    df = pd.concat(tables, ignore_index=True).rename(columns={"group": "cluster"})
    df["gene_id"] = (
        tested.var.loc[df["gene"], "gene_id"].to_numpy() if "gene_id" in tested.var else df["gene"]
    )
    return df[columns].reset_index(drop=True)


def top_markers(markers: pd.DataFrame, n_per_cluster: int = 3) -> dict[str, list[str]]:
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


def plot_marker_dotplot(adata, markers: pd.DataFrame, groupby: str, path, n_per_cluster: int = 3) -> None:
    """Dot plot of the top positive markers of each cluster (scaled per gene), saved as PNG."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    from .runtime import atomic_path

    genes = top_markers(markers, n_per_cluster) if len(markers) else {}
    with atomic_path(path) as tmp:
        if not genes:
            fig, ax = plt.subplots(figsize=(5, 2))
            ax.text(0.5, 0.5, "No marker genes (fewer than two clusters)", ha="center", va="center")
            ax.axis("off")
            fig.savefig(tmp, format="png", dpi=110)
            plt.close(fig)
            return
        plot = sc.pl.dotplot(
            adata,
            genes,
            groupby,
            standard_scale="var",
            use_raw=False,
            show=False,
            return_fig=True,
            colorbar_title="Mean expression\n(scaled per gene)",
        )
        plot.savefig(tmp, format="png", dpi=110)
        plt.close("all")
