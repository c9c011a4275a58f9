"""Partial reading of .h5ad files: some parts, some genes, one layer, or row blocks of X.

The cohort-level jobs read only what they need from the large cohort objects (obs and graphs
without the matrices, the marker genes' columns in row chunks, the raw counts layer), so their
memory follows what they use rather than the size of the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError


def read_elem(path: str | Path, key: str):
    """One element (``"X"``, ``"var"``, ...) of an .h5ad, or None when the file has no such key.

    An unreadable file raises InputError naming it.
    """
    import h5py
    from anndata.io import read_elem as _read_elem

    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                return None
            return _read_elem(handle[key])
    except OSError as exc:
        raise InputError(
            f"Cannot read {path} as an .h5ad file ({exc}); re-run the QC stage for it."
        ) from None


def read_parts(path: str | Path, parts: Sequence[str] = ("obs", "var", "obsm", "obsp", "uns")):
    """Read only some parts of an .h5ad (e.g. without X and layers) as an AnnData."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem as _read_elem

    path = Path(path)
    parts = list(parts)
    if ("X" in parts or "layers" in parts) and "var" not in parts:
        parts.append("var")  # matrices need the gene axis to build a valid AnnData
    with h5py.File(path, "r") as handle:
        elems = {part: _read_elem(handle[part]) for part in parts if part in handle}
    obs = elems.pop("obs")
    var = elems.pop("var", None)
    if var is None:  # no genes read: an empty var with a string index (no anndata warning)
        var = pd.DataFrame(index=pd.Index([], dtype=str))
    return ad.AnnData(X=elems.pop("X", None), obs=obs, var=var, **dict(elems.items()))


def read_var_names(path: str | Path) -> pd.Index:
    """Gene names of an .h5ad without loading its matrices."""
    import h5py

    with h5py.File(path, "r") as handle:
        return _var_names(handle)


def _var_names(handle) -> pd.Index:
    from anndata.io import read_elem as _read_elem

    return pd.Index(_read_elem(handle["var"]).index.astype(str))


def x_row_blocks(handle, path: Path, chunk_rows: int) -> Iterator[tuple[int, sp.csr_matrix]]:
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
        blocks = [block[:, columns] for _, block in x_row_blocks(handle, path, chunk_rows)]
    return stack_rows(blocks, len(genes))


def stack_rows(blocks: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
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


def read_counts_layer(path: str | Path, layer: str | None = "counts", obs_keys: Sequence[str] | None = None):
    """Read only obs, var names and one count matrix of an .h5ad (not X, not the other layers).

    Returns an AnnData whose X is the requested layer (X itself when layer is None), so a large
    integrated object is never loaded whole. obs_keys limits the obs columns read (None: all).
    """
    import anndata as ad
    import h5py
    from anndata.io import read_elem as _read_elem

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run the annotation stage first.")
    with h5py.File(path, "r") as handle:
        if layer is None:
            matrix = _read_elem(handle["X"])
        else:
            layers = list(handle["layers"].keys()) if "layers" in handle else []
            if layer not in layers:
                raise InputError(
                    f"{path} has no layer {layer!r} with raw counts (layers: {', '.join(layers) or 'none'}); "
                    "the annotation stage must keep the raw UMI counts in layers['counts']."
                )
            matrix = _read_elem(handle["layers"][layer])
        obs = _read_elem(handle["obs"])
        var = _read_elem(handle["var"])
    if obs_keys is not None:
        missing = [k for k in obs_keys if k not in obs.columns]
        if missing:
            raise InputError(
                f"{path}: obs lacks column(s) {', '.join(missing)} (it has {', '.join(obs.columns)})."
            )
        obs = obs[list(obs_keys)]
    return ad.AnnData(X=sp.csr_matrix(matrix) if sp.issparse(matrix) else matrix, obs=obs, var=var[[]])
