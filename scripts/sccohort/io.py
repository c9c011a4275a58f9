"""Reading one sample's count matrix, whatever layout it comes in, into a checked AnnData.

Supported: Cell Ranger HDF5 (v3+, and v2 with its genome group), 10x mtx directories (v2
`genes.tsv` and v3 `features.tsv.gz` layouts, gzipped or not), and `.h5ad` with raw counts in X
or a named layer. Every reader returns the same shape of object: X raw integer counts as CSR
float32; var indexed by unique gene symbols with `gene_id`, `gene_symbol`, `feature_types`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from .errors import InputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GENE_EXPRESSION = "Gene Expression"


def detect_format(path: str | Path) -> str:
    """Return "10x_h5", "10x_mtx" or "h5ad" from the path and, for files, their content."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input {path} does not exist; check the sample sheet's path column.")
    if path.is_dir():
        return "10x_mtx"
    suffixes = "".join(path.suffixes[-1:]).lower()
    if suffixes not in (".h5", ".h5ad", ".hdf5"):
        raise InputError(
            f"Input {path}: unknown format {path.suffix!r}; give a Cell Ranger .h5, a 10x mtx directory or an .h5ad."
        )
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head != HDF5_SIGNATURE:
        raise InputError(
            f"Input {path} is not an HDF5 file (wrong format behind the {path.suffix} extension, or a corrupt "
            "or truncated download); re-export or re-download it."
        )
    return "h5ad" if suffixes == ".h5ad" else "10x_h5"


def read_sample(path: str | Path, counts_layer: str | None = None, genome: str | None = None) -> ad.AnnData:
    """Read and check one sample's raw counts; raise InputError naming the file on bad input."""
    path = Path(path)
    fmt = detect_format(path)
    try:
        if fmt == "10x_mtx":
            adata = read_10x_mtx_dir(path)
        elif fmt == "10x_h5":
            adata = read_10x_h5_file(path, genome=genome or None)
        else:
            adata = read_h5ad_counts(path, counts_layer=counts_layer or None)
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(
            f"Input {path} could not be read as {fmt} ({type(exc).__name__}: {exc}); the file may be corrupt, "
            "truncated or of another format."
        ) from exc
    adata.uns["input"] = {"path": str(path), "format": fmt}
    return check_counts(adata, path)


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.exists():
                return candidate
    return None


def read_10x_mtx_dir(folder: Path) -> ad.AnnData:
    """Read a Cell Ranger mtx directory (v2 genes.tsv or v3 features.tsv, gzipped or not)."""
    matrix_file = _find(folder, ("matrix.mtx",))
    barcodes_file = _find(folder, ("barcodes.tsv",))
    features_file = _find(folder, ("features.tsv", "genes.tsv"))
    for name, found in (
        ("matrix.mtx[.gz]", matrix_file),
        ("barcodes.tsv[.gz]", barcodes_file),
        ("features.tsv[.gz] or genes.tsv", features_file),
    ):
        if found is None:
            raise InputError(
                f"10x mtx directory {folder} has no {name}; point the sample sheet at a complete Cell Ranger "
                "output folder (matrix.mtx, barcodes.tsv and features.tsv/genes.tsv)."
            )
    # scipy reads .mtx and .mtx.gz by name.
    matrix = scipy.io.mmread(str(matrix_file))
    # mtx files are genes x cells.
    matrix = sp.csr_matrix(matrix.T, dtype=np.float32)
    barcodes = pd.read_csv(barcodes_file, sep="\t", header=None, dtype=str).iloc[:, 0].to_numpy()
    features = pd.read_csv(features_file, sep="\t", header=None, dtype=str)
    gene_ids = features.iloc[:, 0].to_numpy()
    symbols = features.iloc[:, 1].to_numpy() if features.shape[1] > 1 else gene_ids
    types = (
        features.iloc[:, 2].to_numpy() if features.shape[1] > 2 else np.full(len(gene_ids), GENE_EXPRESSION)
    )
    if matrix.shape != (len(barcodes), len(gene_ids)):
        raise InputError(
            f"10x mtx directory {folder}: the matrix is {matrix.shape[1]} genes x {matrix.shape[0]} cells but "
            f"{features_file.name} lists {len(gene_ids)} genes and {barcodes_file.name} {len(barcodes)} barcodes; "
            "the files do not belong together."
        )
    adata = ad.AnnData(
        X=matrix,
        obs=pd.DataFrame(index=pd.Index(barcodes, name=None)),
        var=pd.DataFrame({"gene_id": gene_ids, "gene_symbol": symbols, "feature_types": types}),
    )
    return _standardise_var(_gene_expression_only(adata))


def read_10x_h5_file(path: Path, genome: str | None = None) -> ad.AnnData:
    """Read a Cell Ranger .h5 (v3 `matrix` group, or v2 with one group per genome)."""
    import h5py

    with h5py.File(path, "r") as handle:
        groups = list(handle.keys())
        if "matrix" in groups:
            group = handle["matrix"]
            features = group["features"]
            gene_ids = features["id"][:].astype(str)
            symbols = features["name"][:].astype(str)
            types = (
                features["feature_type"][:].astype(str)
                if "feature_type" in features
                else np.full(len(gene_ids), GENE_EXPRESSION)
            )
        else:
            if not groups:
                raise InputError(
                    f"Input {path} is an HDF5 file with no groups; it is not a Cell Ranger matrix."
                )
            if genome is None:
                if len(groups) > 1:
                    raise InputError(
                        f"Input {path} holds several genomes ({', '.join(groups)}); name one in the sample "
                        "sheet's genome column."
                    )
                genome = groups[0]
            if genome not in groups:
                raise InputError(f"Input {path} has no genome {genome!r}; it has {', '.join(groups)}.")
            group = handle[genome]
            if "genes" not in group:
                raise InputError(
                    f"Input {path}: group {genome!r} is not a Cell Ranger v2 matrix (no 'genes')."
                )
            gene_ids = group["genes"][:].astype(str)
            symbols = group["gene_names"][:].astype(str)
            types = np.full(len(gene_ids), GENE_EXPRESSION)
        n_genes, n_cells = (int(v) for v in group["shape"][:])
        # Cell Ranger stores genes x cells in CSC, which is cells x genes in CSR.
        matrix = sp.csr_matrix(
            (group["data"][:].astype(np.float32), group["indices"][:], group["indptr"][:]),
            shape=(n_cells, n_genes),
        )
        barcodes = group["barcodes"][:].astype(str)
    adata = ad.AnnData(
        X=matrix,
        obs=pd.DataFrame(index=pd.Index(barcodes)),
        var=pd.DataFrame({"gene_id": gene_ids, "gene_symbol": symbols, "feature_types": types}),
    )
    return _standardise_var(_gene_expression_only(adata))


def read_h5ad_counts(path: Path, counts_layer: str | None = None) -> ad.AnnData:
    """Read an .h5ad, taking raw counts from X or from `counts_layer`."""
    adata = ad.read_h5ad(path)
    if counts_layer:
        if counts_layer not in adata.layers:
            raise InputError(
                f"Input {path} has no layer {counts_layer!r} (layers: {', '.join(adata.layers) or 'none'}); "
                "fix the sample sheet's counts_layer column."
            )
        matrix = adata.layers[counts_layer]
    else:
        matrix = adata.X
    if matrix is None:
        raise InputError(f"Input {path} has no X matrix; name the layer with raw counts in counts_layer.")
    if not _is_integer_valued(matrix):
        hints = [name for name, layer in adata.layers.items() if _is_integer_valued(layer)]
        if adata.raw is not None and _is_integer_valued(adata.raw.X):
            hints.append(".raw (not supported directly: move it to a layer)")
        where = f"layer {counts_layer!r}" if counts_layer else "X"
        hint = (
            f" Layers that hold integer counts: {', '.join(hints)}; name one in counts_layer."
            if hints
            else ""
        )
        raise InputError(
            f"Input {path}: {where} does not hold raw integer counts (it looks normalised or log-transformed); "
            f"sccohort needs raw UMI counts.{hint}"
        )
    var = adata.var.copy()
    symbol_column = next(
        (c for c in ("gene_symbol", "gene_symbols", "feature_name", "symbol") if c in var), None
    )
    id_column = next((c for c in ("gene_id", "gene_ids", "ensembl_id") if c in var), None)
    symbols = var[symbol_column].astype(str).to_numpy() if symbol_column else var.index.astype(str).to_numpy()
    gene_ids = var[id_column].astype(str).to_numpy() if id_column else symbols
    types = (
        var["feature_types"].astype(str).to_numpy()
        if "feature_types" in var
        else np.full(len(symbols), GENE_EXPRESSION)
    )
    result = ad.AnnData(
        X=sp.csr_matrix(matrix, dtype=np.float32),
        obs=pd.DataFrame(index=adata.obs_names.astype(str)),
        var=pd.DataFrame({"gene_id": gene_ids, "gene_symbol": symbols, "feature_types": types}),
    )
    return _standardise_var(_gene_expression_only(result))


def _gene_expression_only(adata: ad.AnnData) -> ad.AnnData:
    """Drop antibody-capture, CRISPR and other non-gene features (multimodal Cell Ranger output)."""
    keep = adata.var["feature_types"].astype(str).to_numpy() == GENE_EXPRESSION
    return adata[:, keep].copy() if not keep.all() else adata


def _standardise_var(adata: ad.AnnData) -> ad.AnnData:
    """Index var by gene symbol, made unique (`-1`, `-2` suffixes), keeping ids and original symbols."""
    var = adata.var
    var["gene_id"] = var["gene_id"].astype(str)
    var["gene_symbol"] = var["gene_symbol"].astype(str)
    var["feature_types"] = var["feature_types"].astype(str)
    var.index = pd.Index(var["gene_symbol"].to_numpy(), dtype=str)
    adata.var = var
    adata.var_names_make_unique()
    adata.obs_names = adata.obs_names.astype(str)
    return adata


def _is_integer_valued(matrix) -> bool:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.size == 0:
        return True
    if not np.issubdtype(values.dtype, np.number):
        return False
    return bool(np.all(values >= 0) and np.all(np.equal(np.mod(values, 1), 0)))


def check_count_values(values: np.ndarray, path: str | Path, checked: str = "") -> None:
    """Refuse negative or non-integer values (normalised, log-transformed or corrected data)."""
    values = np.asarray(values)
    if not values.size:
        return
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"Input {path}: the count matrix is not numeric ({values.dtype}).")
    if np.any(values < 0):
        raise InputError(
            f"Input {path} contains negative counts{checked}; sccohort needs raw UMI counts, not scaled or "
            "corrected values. Point the sample sheet at the Cell Ranger output."
        )
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError(
            f"Input {path} contains non-integer values{checked} (already normalised or corrected data?); "
            "sccohort needs raw UMI counts. For an .h5ad, name the layer with raw counts in the counts_layer column."
        )


def check_counts(adata: ad.AnnData, path: str | Path) -> ad.AnnData:
    """Refuse empty matrices, non-integer or negative counts and duplicate barcodes."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"Input {path} holds an empty matrix ({adata.n_obs} cells x {adata.n_vars} genes); check that it is "
            "the filtered Cell Ranger output of a sample that captured cells."
        )
    check_count_values(adata.X.data, path)
    duplicated = adata.obs_names[adata.obs_names.duplicated()]
    if len(duplicated):
        raise InputError(
            f"Input {path} has {len(duplicated)} duplicate barcodes (e.g. {duplicated[0]!r}); each barcode must "
            "appear once per sample. Was the matrix concatenated from several runs?"
        )
    adata.X.sum_duplicates()
    adata.X.sort_indices()
    return adata


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
        for name, stems in (
            ("matrix.mtx[.gz]", ("matrix.mtx",)),
            ("barcodes.tsv[.gz]", ("barcodes.tsv",)),
            ("features.tsv[.gz] or genes.tsv", ("features.tsv", "genes.tsv")),
        ):
            if _find(path, stems) is None:
                raise InputError(
                    f"10x mtx directory {path} has no {name}; point the sample sheet at a complete Cell Ranger "
                    "output folder (matrix.mtx, barcodes.tsv and features.tsv/genes.tsv)."
                )
        return fmt
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            groups = list(handle.keys())
            if fmt == "h5ad":
                if counts_layer and counts_layer not in handle.get("layers", {}):
                    layers = list(handle["layers"].keys()) if "layers" in handle else []
                    raise InputError(
                        f"Input {path} has no layer {counts_layer!r} (layers: {', '.join(layers) or 'none'}); "
                        "fix the sample sheet's counts_layer column."
                    )
                if not counts_layer and "X" not in handle:
                    raise InputError(
                        f"Input {path} has no X matrix; name the layer with raw counts in counts_layer."
                    )
            elif "matrix" in groups:
                missing = [
                    k for k in ("data", "indices", "indptr", "shape", "barcodes") if k not in handle["matrix"]
                ]
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
                raise InputError(
                    f"Input {path} is an HDF5 file with no groups; it is not a Cell Ranger matrix."
                )
    except OSError as exc:
        raise InputError(
            f"Input {path} cannot be opened as HDF5 ({exc}); the file may be corrupt or truncated."
        )
    return fmt


# Values checked when the DAG is built: the first stored values of the matrix (load_sample checks all).
HEAD_VALUES = 10_000


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
        else:
            summary = _inspect_hdf5(path, fmt, counts_layer, genome)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise InputError(
            f"Input {path} could not be read as {fmt} ({type(exc).__name__}: {exc}); the file may be corrupt, "
            "truncated or of another format."
        ) from exc
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
    import gzip

    matrix_file = _find(folder, ("matrix.mtx",))
    features_file = _find(folder, ("features.tsv", "genes.tsv"))
    opener = gzip.open if matrix_file.name.endswith(".gz") else open
    values = []
    with opener(matrix_file, "rt") as handle:
        banner = handle.readline()
        if not banner.startswith("%%MatrixMarket"):
            raise InputError(
                f"{matrix_file} is not a Matrix Market file (its first line is {banner[:60]!r})."
            )
        line = handle.readline()
        while line.startswith("%"):
            line = handle.readline()
        n_genes, n_cells, _ = (int(v) for v in line.split())
        for line in handle:
            fields = line.split()
            if len(fields) >= 3:
                values.append(float(fields[2]))
            if len(values) >= HEAD_VALUES:
                break
    check_count_values(np.array(values), folder, f" (first {len(values):,} values checked)")
    features = pd.read_csv(features_file, sep="\t", header=None, dtype=str)
    if len(features) != n_genes:
        raise InputError(
            f"10x mtx directory {folder}: the matrix has {n_genes} genes but {features_file.name} lists "
            f"{len(features)}; the files do not belong together."
        )
    ids = features.iloc[:, 0]
    symbols = features.iloc[:, 1] if features.shape[1] > 1 else ids
    types = features.iloc[:, 2] if features.shape[1] > 2 else None
    gene_ids, gene_symbols = _gene_expression(ids, symbols, types)
    return InputSummary("10x_mtx", n_cells, len(gene_ids), gene_ids, gene_symbols)


def _inspect_hdf5(path: Path, fmt: str, counts_layer: str | None, genome: str | None) -> InputSummary:
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        if fmt == "h5ad":
            matrix = handle["layers"][counts_layer] if counts_layer else handle["X"]
            if isinstance(matrix, h5py.Group):  # sparse: data/indices/indptr, shape in attrs
                n_cells, n_genes = (int(v) for v in matrix.attrs["shape"])
                head = matrix["data"][:HEAD_VALUES]
            else:
                n_cells, n_genes = matrix.shape
                head = matrix[: max(1, HEAD_VALUES // max(n_genes, 1))].ravel()
                head = head[head != 0]
            var = read_elem(handle["var"])
            symbol_column = next(
                (c for c in ("gene_symbol", "gene_symbols", "feature_name", "symbol") if c in var), None
            )
            id_column = next((c for c in ("gene_id", "gene_ids", "ensembl_id") if c in var), None)
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
        else:
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
    return InputSummary(fmt, n_cells, len(gene_ids), gene_ids, gene_symbols)


def _head_is_counts(matrix) -> bool:
    """Whether the first stored values of an h5ad matrix (group or dataset) are count-like."""
    import h5py

    head = matrix["data"][:HEAD_VALUES] if isinstance(matrix, h5py.Group) else matrix[:10].ravel()
    try:
        check_count_values(head, "")
    except InputError:
        return False
    return True
