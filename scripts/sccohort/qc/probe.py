"""DAG-time checks of one sample's input: its layout, shape, genes and first counts, from headers.

workflow/rules/common.smk calls probe_input for every sample (also on cluster nodes, which
re-read the Snakefile) and config_checks.check_inputs calls inspect_input, so a wrong, truncated,
empty or normalised input fails `snakemake -n` before any job runs. load_sample (load.py) then
checks the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..counts import is_integer_valued
from ..errors import READ_ERRORS, InputError
from ..names import GENE_EXPRESSION
from .load import (
    check_count_values,
    check_mtx_banner,
    count_lines,
    detect_format,
    find_mtx_files,
    open_maybe_gzipped,
    read_part,
    read_text_table,
    refuse_other_layout,
    unreadable,
    var_columns,
)

# Values checked when the DAG is built: the first stored values of the matrix (load_sample checks all).
HEAD_VALUES = 10_000


def probe_input(path: str | Path, counts_layer: str | None = None, genome: str | None = None) -> str:
    """Cheap structural check of one input, run for every sample when the DAG is built.

    Reads headers only (HDF5 signature and group layout, file presence in mtx folders), so a
    wrong, truncated or incomplete input fails `snakemake -n` in milliseconds instead of a job
    on a cluster node. Content checks (integer counts, duplicate barcodes) need the data and
    run in load_sample. Returns the detected format.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "10x_mtx":
        find_mtx_files(path)
        return fmt
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if fmt == "h5ad":
                _probe_h5ad(handle, path, counts_layer)
            else:
                _probe_10x_h5(handle, path, genome)
    except PermissionError as exc:
        raise unreadable(f"Input {path}", "cannot be opened", exc) from None
    except OSError as exc:
        raise InputError(
            f"Input {path} cannot be opened as HDF5 ({exc}); the file may be corrupt or truncated."
        )
    return fmt


def _probe_h5ad(handle, path: Path, counts_layer: str | None) -> None:
    refuse_other_layout(path, handle.keys(), "h5ad")
    if counts_layer and counts_layer not in handle.get("layers", {}):
        layers = list(handle["layers"].keys()) if "layers" in handle else []
        raise InputError(
            f"Input {path} has no layer {counts_layer!r} (layers: {', '.join(layers) or 'none'}); "
            "fix the sample sheet's counts_layer column."
        )
    if not counts_layer and "X" not in handle:
        raise InputError(f"Input {path} has no X matrix; name the layer with raw counts in counts_layer.")


def _probe_10x_h5(handle, path: Path, genome: str | None) -> None:
    groups = list(handle.keys())
    refuse_other_layout(path, groups, "10x_h5")
    if "matrix" in groups:
        missing = [k for k in ("data", "indices", "indptr", "shape", "barcodes") if k not in handle["matrix"]]
        if missing:
            raise InputError(
                f"Input {path} is not a complete Cell Ranger matrix (missing {', '.join(missing)})."
            )
    elif genome is None and len(groups) > 1:
        raise InputError(
            f"Input {path} holds several genomes ({', '.join(groups)}); name one in the sample sheet's "
            "genome column."
        )
    elif not groups:
        raise InputError(f"Input {path} is an HDF5 file with no groups; it is not a Cell Ranger matrix.")


@dataclass
class InputSummary:
    """What inspect_input learns about one input from its headers: format, shape, genes."""

    format: str
    n_cells: int
    n_genes: int
    gene_ids: np.ndarray  # gene-expression features only, in file order
    gene_symbols: np.ndarray


def inspect_input(
    path: str | Path, counts_layer: str | None = None, genome: str | None = None
) -> InputSummary:
    """probe_input plus shape, gene list and the first HEAD_VALUES counts, for DAG-time checks.

    Reads the gene list and a few kB of the matrix, never the whole matrix, so an empty matrix,
    normalised or negative values at the start of the data, and gene sets that cannot be merged
    are refused by `snakemake -n` before any job runs.
    """
    path = Path(path)
    fmt = probe_input(path, counts_layer, genome)
    try:
        if fmt == "10x_mtx":
            summary = _inspect_mtx(path)
        elif fmt == "h5ad":
            summary = _inspect_h5ad(path, counts_layer)
        else:
            summary = _inspect_10x_h5(path, genome)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise unreadable(f"Input {path}", f"could not be read as {fmt}", exc) from exc
    if summary.n_cells == 0 or summary.n_genes == 0:
        raise InputError(
            f"Input {path} holds an empty matrix ({summary.n_cells} cells x {summary.n_genes} genes); check that it "
            "is the filtered Cell Ranger output of a sample that captured cells."
        )
    return summary


def _gene_expression(ids, symbols, types) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids).astype(str)
    symbols = np.asarray(symbols).astype(str)
    if types is None:
        return ids, symbols
    keep = np.asarray(types).astype(str) == GENE_EXPRESSION
    return ids[keep], symbols[keep]


def _inspect_mtx(folder: Path) -> InputSummary:
    matrix_file, barcodes_file, features_file = find_mtx_files(folder)
    n_genes, n_cells, values = read_part(folder, matrix_file, _matrix_head)
    check_count_values(np.array(values), folder, f" (first {len(values):,} values checked)")
    features = read_part(folder, features_file, read_text_table)
    # the barcodes are one short line per cell: counted in full (a fraction of a second even for
    # an unfiltered matrix), so a truncated, empty or mismatched barcodes file fails `snakemake -n`
    n_barcodes = read_part(folder, barcodes_file, count_lines)
    if len(features) != n_genes or n_barcodes != n_cells:
        raise InputError(
            f"10x mtx directory {folder}: the matrix is {n_genes} genes x {n_cells} cells but "
            f"{features_file.name} lists {len(features)} genes and {barcodes_file.name} {n_barcodes} barcodes; "
            "the files do not belong together."
        )
    ids = features.iloc[:, 0]
    symbols = features.iloc[:, 1] if features.shape[1] > 1 else ids
    types = features.iloc[:, 2] if features.shape[1] > 2 else None
    gene_ids, gene_symbols = _gene_expression(ids, symbols, types)
    return InputSummary("10x_mtx", n_cells, len(gene_ids), gene_ids, gene_symbols)


def _matrix_head(matrix_file: Path) -> tuple[int, int, list[float]]:
    """(genes, cells, the first HEAD_VALUES values) of a Matrix Market file, gzipped or not; its
    header must declare a count matrix and the first entries must lie inside its dimensions."""
    values = []
    with open_maybe_gzipped(matrix_file) as handle:
        check_mtx_banner(handle.readline(), matrix_file)
        line = handle.readline()
        while line.startswith("%"):
            line = handle.readline()
        n_genes, n_cells, _ = (int(v) for v in line.split())
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if len(fields) < 3:
                continue
            gene, cell = int(fields[0]), int(fields[1])
            if not (1 <= gene <= n_genes and 1 <= cell <= n_cells):
                raise InputError(
                    f"{matrix_file}: entry {number} ({line.strip()[:60]!r}) lies outside the matrix's "
                    f"{n_genes} genes x {n_cells} cells; the file is damaged. Export it again."
                )
            values.append(float(fields[2]))
            if len(values) >= HEAD_VALUES:
                break
    return n_genes, n_cells, values


def _inspect_h5ad(path: Path, counts_layer: str | None) -> InputSummary:
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        matrix = handle["layers"][counts_layer] if counts_layer else handle["X"]
        if isinstance(matrix, h5py.Group):  # sparse: data/indices/indptr, shape in attrs
            n_cells, n_genes = (int(v) for v in matrix.attrs["shape"])
            head = matrix["data"][:HEAD_VALUES]
        else:
            n_cells, n_genes = matrix.shape
            head = matrix[: max(1, HEAD_VALUES // max(n_genes, 1))].ravel()
            head = head[head != 0]
        var = read_elem(handle["var"])
        symbol_column, id_column = var_columns(var)
        symbols = var[symbol_column] if symbol_column else var.index
        ids = var[id_column] if id_column else symbols
        types = var["feature_types"] if "feature_types" in var else None
        where = f"layer {counts_layer!r}" if counts_layer else "X"
        checked = f" in {where} (first {len(head):,} stored values checked)"
        try:
            check_count_values(head, path, checked)
        except InputError as error:
            layers = [
                name
                for name, layer in handle.get("layers", {}).items()
                if name != counts_layer and _head_is_counts(layer)
            ]
            if layers:
                raise InputError(
                    f"{error} Layers that look like raw counts: {', '.join(layers)}; name one in counts_layer."
                ) from None
            raise
    gene_ids, gene_symbols = _gene_expression(ids, symbols, types)
    return InputSummary("h5ad", n_cells, len(gene_ids), gene_ids, gene_symbols)


def _inspect_10x_h5(path: Path, genome: str | None) -> InputSummary:
    import h5py

    with h5py.File(path, "r") as handle:
        if "matrix" not in handle and genome and genome not in handle:
            raise InputError(
                f"Input {path} has no genome {genome!r}; it has {', '.join(handle.keys())}. Fix the sample "
                "sheet's genome column."
            )
        group = handle["matrix"] if "matrix" in handle else handle[genome or next(iter(handle.keys()))]
        n_genes, n_cells = (int(v) for v in group["shape"][:])
        head = group["data"][:HEAD_VALUES]
        if "features" in group:
            features = group["features"]
            ids, symbols = features["id"][:], features["name"][:]
            types = features["feature_type"][:] if "feature_type" in features else None
        else:
            ids, symbols, types = group["genes"][:], group["gene_names"][:], None
        check_count_values(head, path, f" (first {len(head):,} stored values checked)")
        ids = np.char.decode(ids.astype(bytes), "utf-8")
        symbols = np.char.decode(symbols.astype(bytes), "utf-8")
        if types is not None:
            types = np.char.decode(types.astype(bytes), "utf-8")
    gene_ids, gene_symbols = _gene_expression(ids, symbols, types)
    return InputSummary("10x_h5", n_cells, len(gene_ids), gene_ids, gene_symbols)


def _head_is_counts(matrix) -> bool:
    """Whether the first stored values of an h5ad matrix (group or dataset) are count-like."""
    import h5py

    head = matrix["data"][:HEAD_VALUES] if isinstance(matrix, h5py.Group) else matrix[:10].ravel()
    return is_integer_valued(head)
