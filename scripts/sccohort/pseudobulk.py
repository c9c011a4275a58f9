"""Pseudobulk aggregation: raw counts summed per sample x group (cell type or cluster).

A pseudobulk sample is every cell of one sample in one group; its counts are the sum of
those cells' raw UMI counts. Differential expression between conditions is then tested on
pseudobulk samples (one per biological replicate), not on cells: cell-level tests treat
cells as replicates and inflate false discoveries (Squair et al., Nat Commun 2021).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError

# Separates sample and group in pseudobulk sample ids; safe_name() never produces it.
PSEUDOBULK_SEPARATOR = "__"
# File names the DE stage writes itself beside the group files; no group may take them.
RESERVED_NAMES = frozenset({"summary", "all_groups", "figures", "pseudobulk"})


def safe_name(name: object) -> str:
    """A file-name-safe version of a group, level or contrast name.

    Every run of characters other than letters, digits, '.', '_' and '-' becomes one '_',
    '_' runs are collapsed, and leading/trailing '_', '.' and '-' are stripped, so
    "CD14 Mono" -> "CD14_Mono", "CD4+ T cells" -> "CD4_T_cells", "B cells (naive)" ->
    "B_cells_naive". A name with nothing left becomes "group". The result never contains
    "__" (the pseudobulk id separator). Different names can map to the same safe name;
    safe_names() makes a set of them unique.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
    text = re.sub(r"_+", "_", text).strip("_.-")
    return text or "group"


def safe_names(names: Iterable[object], reserved: Iterable[str] = RESERVED_NAMES) -> dict[str, str]:
    """Map each distinct name to a unique safe_name(); clashes get _2, _3, ... in sorted order.

    Names in `reserved` (files the stage writes itself) are never handed out.
    """
    taken = {r.lower() for r in reserved}
    mapping: dict[str, str] = {}
    for name in sorted({str(n) for n in names}):
        base = safe_name(name)
        candidate, i = base, 1
        # Case-insensitive: group files must not collide on case-insensitive file systems.
        while candidate.lower() in taken:
            i += 1
            candidate = f"{base}_{i}"
        taken.add(candidate.lower())
        mapping[name] = candidate
    return mapping


def read_counts_h5ad(path: str | Path, layer: str | None = "counts", obs_keys: Sequence[str] | None = None):
    """Read only obs, var names and one count matrix of an .h5ad (not X, not the other layers).

    Returns an AnnData whose X is the requested layer (X itself when layer is None), so a large
    integrated object is never loaded whole. obs_keys limits the obs columns read (None: all).
    """
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run the annotation stage first.")
    with h5py.File(path, "r") as handle:
        if layer is None:
            matrix = read_elem(handle["X"])
        else:
            layers = list(handle["layers"].keys()) if "layers" in handle else []
            if layer not in layers:
                raise InputError(
                    f"{path} has no layer {layer!r} with raw counts (layers: {', '.join(layers) or 'none'}); "
                    "the annotation stage must keep the raw UMI counts in layers['counts']."
                )
            matrix = read_elem(handle["layers"][layer])
        obs = read_elem(handle["obs"])
        var = read_elem(handle["var"])
    if obs_keys is not None:
        missing = [k for k in obs_keys if k not in obs.columns]
        if missing:
            raise InputError(
                f"{path}: obs lacks column(s) {', '.join(missing)} (it has {', '.join(obs.columns)})."
            )
        obs = obs[list(obs_keys)]
    return ad.AnnData(X=sp.csr_matrix(matrix) if sp.issparse(matrix) else matrix, obs=obs, var=var[[]])


def check_integer_counts(matrix, source: str) -> None:
    """Raise InputError unless the matrix holds finite, non-negative whole numbers."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        raise InputError(
            f"{source}: the count matrix has NaN or infinite values; it must hold raw UMI counts."
        )
    if values.min() < 0:
        raise InputError(f"{source}: the count matrix has negative values; it must hold raw UMI counts.")
    if not np.all(np.mod(values, 1) == 0):
        raise InputError(
            f"{source}: the count matrix has non-integer values (normalised or log data?); "
            "pseudobulk DE needs the raw UMI counts (layers['counts'])."
        )


def pseudobulk(
    adata,
    group_by: str,
    sample_key: str = "sample",
    layer: str | None = "counts",
    covariates: Sequence[str] = (),
    source: str = "AnnData",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum raw counts per sample x group.

    Returns (counts, metadata): counts is a pseudobulk samples x genes DataFrame of int64;
    metadata is indexed by the same pseudobulk ids ("<sample>__<safe group>") with columns
    pseudobulk, sample, group (original label), group_file (safe_name for file names),
    n_cells, and the sample-level `covariates` (each must be constant within a sample).
    Cells whose group is missing (NaN or empty) are left out. Sparse throughout: the only
    dense matrix is pseudobulk samples x genes.
    """
    obs = adata.obs
    for key, what in ((sample_key, "sample id"), (group_by, "group (de.group_by)")):
        if key not in obs.columns:
            raise InputError(
                f"{source}: obs has no column {key!r} ({what}); it has {', '.join(map(str, obs.columns))}. "
                "Set de.group_by to one of them (e.g. cell_type or a leiden_<resolution> column)."
            )
    missing_cov = [c for c in covariates if c not in obs.columns]
    if missing_cov:
        raise InputError(
            f"{source}: obs lacks the sample-sheet column(s) {', '.join(missing_cov)} that the DE design "
            "needs; the annotation stage must copy every sheet column into obs."
        )
    if layer is None:
        matrix = adata.X
    else:
        if layer not in adata.layers:
            raise InputError(
                f"{source}: no layer {layer!r} with raw counts (layers: {', '.join(adata.layers)})."
            )
        matrix = adata.layers[layer]
    matrix = sp.csr_matrix(matrix)
    check_integer_counts(matrix, source)

    groups = obs[group_by].astype("string")
    samples = obs[sample_key].astype("string")
    keep = (groups.notna() & (groups.str.strip() != "") & samples.notna()).to_numpy()
    cell_index = np.flatnonzero(keep)
    if cell_index.size == 0:
        raise InputError(f"{source}: no cell has a value in obs column {group_by!r}.")

    group_files = safe_names(groups[keep].unique())
    pairs = pd.DataFrame(
        {"sample": samples[keep].to_numpy(dtype=str), "group": groups[keep].to_numpy(dtype=str)}
    )
    pair_keys = pd.MultiIndex.from_frame(pairs)
    codes, uniques = pd.factorize(pair_keys, sort=True)
    indicator = sp.csr_matrix(
        (np.ones(codes.size, dtype=np.float64), (codes, cell_index)),
        shape=(len(uniques), adata.n_obs),
    )
    summed = (indicator @ matrix).toarray()
    summed = np.rint(summed).astype(np.int64)

    meta = pd.DataFrame(list(uniques), columns=["sample", "group"])
    meta["group_file"] = meta["group"].map(group_files)
    meta.insert(0, "pseudobulk", meta["sample"] + PSEUDOBULK_SEPARATOR + meta["group_file"])
    meta["n_cells"] = np.bincount(codes, minlength=len(uniques)).astype(int)

    if covariates:
        per_sample = obs.loc[keep, [sample_key, *covariates]].astype("string")
        n_values = per_sample.groupby(sample_key, observed=True)[list(covariates)].nunique(dropna=False)
        varying = n_values.columns[(n_values > 1).any(axis=0)].tolist()
        if varying:
            bad = n_values.index[(n_values[varying] > 1).any(axis=1)].tolist()
            raise InputError(
                f"{source}: obs column(s) {', '.join(varying)} vary within sample(s) "
                f"{', '.join(map(str, bad[:5]))}; sample-sheet covariates must be constant per sample."
            )
        first = per_sample.groupby(sample_key, observed=True).first()
        for column in covariates:
            meta[column] = meta["sample"].map(first[column]).astype(str).to_numpy()

    meta = meta.set_index("pseudobulk", drop=False)
    meta.index.name = None
    counts = pd.DataFrame(summed, index=meta.index, columns=pd.Index(adata.var_names.astype(str), name=None))
    order = meta.sort_values(["group", "sample"]).index
    return counts.loc[order], meta.loc[order]


def write_pseudobulk(counts: pd.DataFrame, metadata: pd.DataFrame, counts_path, metadata_path) -> None:
    """counts.tsv.gz: genes x pseudobulk samples (first column `gene`); metadata.tsv: one row per pseudobulk."""
    from .runtime import write_table

    table = counts.T
    table.index.name = "gene"
    write_table(table, counts_path, index=True)
    write_table(metadata, metadata_path, index=False)


def read_pseudobulk(counts_path, metadata_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inverse of write_pseudobulk: (pseudobulk x genes int64 counts, metadata indexed by pseudobulk id).

    Every column is read as text (gene 'NA' stays 'NA', donor '01' stays '01').
    """
    counts = pd.read_csv(counts_path, sep="\t", index_col=0, keep_default_na=False, dtype={"gene": str})
    counts.index = counts.index.astype(str)
    meta = pd.read_csv(metadata_path, sep="\t", dtype=str, keep_default_na=False)
    meta["n_cells"] = meta["n_cells"].astype(int)
    meta = meta.set_index("pseudobulk", drop=False)
    meta.index.name = None
    counts = counts.T.astype(np.int64)
    counts.columns.name = None
    missing = meta.index.difference(counts.index)
    if len(missing):
        raise InputError(
            f"{counts_path} lacks pseudobulk sample(s) {', '.join(missing[:5])} listed in {metadata_path}."
        )
    return counts.loc[meta.index], meta
