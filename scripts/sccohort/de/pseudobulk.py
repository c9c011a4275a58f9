"""Pseudobulk aggregation: raw counts summed per sample x group (cell type or cluster).

A pseudobulk sample is every cell of one sample in one group; its counts are the sum of
those cells' raw UMI counts. Differential expression between conditions is then tested on
pseudobulk samples (one per biological replicate), not on cells: cell-level tests treat
cells as replicates and inflate false discoveries (Squair et al., Nat Commun 2021).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..counts import check_integer_counts
from ..errors import InputError
from ..h5ad import read_counts_layer
from ..names import PSEUDOBULK_SEPARATOR, safe_names
from ..runtime import read_table, write_table

# What to do when the counts are not whole numbers (the end of check_integer_counts' message).
RAW_COUNTS_HINT = "pseudobulk DE needs the raw UMI counts (layers['counts'])"


def de_pseudobulk(
    *,
    integrated_h5ad: str,
    counts_output: str,
    metadata_output: str,
    group_by: str,
    layer: str | None,
    min_cells: int,
    covariates: Sequence[str],
    required: Sequence[str],
    log: logging.Logger,
) -> None:
    """Rule de_pseudobulk: sum the raw counts of the integrated, annotated cohort per sample x group.

    Reads only obs, var names and `layer` of `integrated_h5ad`. `covariates` (sheet columns) are
    copied into the metadata when obs has them; `required` (the design's variables and contrast
    factors) must be in obs. Writes `counts_output` (genes x pseudobulk samples) and
    `metadata_output` (write_pseudobulk).
    """
    source = str(integrated_h5ad)
    adata = read_counts_layer(source, layer=layer)
    kept = [c for c in covariates if c in adata.obs.columns]
    ignored = [c for c in covariates if c not in adata.obs.columns and c not in required]
    if ignored:
        log.warning(
            "sheet column(s) %s not in obs of %s; left out of the metadata", ", ".join(ignored), source
        )
    kept += [c for c in required if c not in kept]
    log.info("%s: %d cells x %d genes; grouping by %r", source, adata.n_obs, adata.n_vars, group_by)
    counts, metadata = pseudobulk(adata, group_by=group_by, layer=None, covariates=kept, source=source)
    log.info(
        "%d pseudobulk samples (%d groups x %d samples); %d with fewer than %d cells",
        len(metadata),
        metadata["group"].nunique(),
        metadata["sample"].nunique(),
        int((metadata["n_cells"] < min_cells).sum()),
        min_cells,
    )
    write_pseudobulk(counts, metadata, counts_path=counts_output, metadata_path=metadata_output)


def pseudobulk(
    adata,
    *,
    group_by: str,
    sample_key: str = "sample",
    layer: str | None = "counts",
    covariates: Sequence[str] = (),
    source: str = "AnnData",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum raw counts (``layers[layer]``, X when layer is None) per ``obs[sample_key]`` x ``obs[group_by]``.

    Returns (counts, metadata): counts is a pseudobulk samples x genes DataFrame of int64;
    metadata is indexed by the same pseudobulk ids ("<sample>__<safe group>") with columns
    pseudobulk, sample, group (original label), group_file (safe_name for file names),
    n_cells, and the sample-level `covariates` (each must be constant within a sample).
    Cells whose group is missing (NaN or empty) are left out. Sparse throughout: the only
    dense matrix is pseudobulk samples x genes. Writes nothing into `adata`.
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
    check_integer_counts(matrix, source, hint=RAW_COUNTS_HINT)

    groups = obs[group_by].astype("string")
    samples = obs[sample_key].astype("string")
    keep = (groups.notna() & (groups.str.strip() != "") & samples.notna()).to_numpy()
    cell_index = np.flatnonzero(keep)
    if cell_index.size == 0:
        raise InputError(f"{source}: no cell has a value in obs column {group_by!r}.")

    # One row per (sample, group) pair, in sorted order; an indicator matrix (pairs x cells)
    # times the counts sums each pair's cells without densifying the cells x genes matrix.
    group_files = safe_names(groups[keep].unique())
    pairs = pd.DataFrame(
        {"sample": samples[keep].to_numpy(dtype=str), "group": groups[keep].to_numpy(dtype=str)}
    )
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(pairs), sort=True)
    indicator = sp.csr_matrix(
        (np.ones(codes.size, dtype=np.float64), (codes, cell_index)),
        shape=(len(uniques), adata.n_obs),
    )
    summed = np.rint((indicator @ matrix).toarray()).astype(np.int64)

    meta = pd.DataFrame(list(uniques), columns=["sample", "group"])
    meta["group_file"] = meta["group"].map(group_files)
    meta.insert(0, "pseudobulk", meta["sample"] + PSEUDOBULK_SEPARATOR + meta["group_file"])
    meta["n_cells"] = np.bincount(codes, minlength=len(uniques)).astype(int)
    if covariates:
        _add_sample_covariates(
            meta, obs.loc[keep], sample_key=sample_key, covariates=covariates, source=source
        )

    meta = meta.set_index("pseudobulk", drop=False)
    meta.index.name = None
    counts = pd.DataFrame(summed, index=meta.index, columns=pd.Index(adata.var_names.astype(str), name=None))
    order = meta.sort_values(["group", "sample"]).index
    return counts.loc[order], meta.loc[order]


def _add_sample_covariates(
    meta: pd.DataFrame, obs: pd.DataFrame, *, sample_key: str, covariates: Sequence[str], source: str
) -> None:
    """Add each of `covariates` (obs columns of the kept cells) to `meta` by its sample, as text.

    InputError when a covariate takes more than one value within a sample.
    """
    per_sample = obs[[sample_key, *covariates]].astype("string")
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


def write_pseudobulk(counts: pd.DataFrame, metadata: pd.DataFrame, *, counts_path, metadata_path) -> None:
    """counts.tsv.gz: genes x pseudobulk samples (first column `gene`); metadata.tsv: one row per pseudobulk."""
    table = counts.T
    table.index.name = "gene"
    write_table(table, counts_path, index=True)
    write_table(metadata, metadata_path, index=False)


def read_pseudobulk(counts_path, metadata_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inverse of write_pseudobulk: (pseudobulk x genes int64 counts, metadata indexed by pseudobulk id).

    Every column is read as text (gene 'NA' stays 'NA', donor '01' stays '01').
    """
    counts = read_table(counts_path, index_col=0)
    counts.index = counts.index.astype(str)
    meta = read_table(metadata_path, dtype=str)
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
