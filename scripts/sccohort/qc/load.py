"""Reading one sample's count matrix, whatever layout it comes in, into a checked AnnData.

Supported: Cell Ranger HDF5 (v3+, and v2 with its genome group), 10x mtx directories (v2
`genes.tsv` and v3 `features.tsv.gz` layouts, gzipped or not), and `.h5ad` with raw counts in X
or a named layer. Every reader returns the same shape of object: X raw integer counts as CSR
float32; var indexed by unique gene symbols with `gene_id`, `gene_symbol`, `feature_types`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ..counts import is_integer_valued
from ..errors import READ_ERRORS, InputError
from ..names import GENE_EXPRESSION

# anndata is imported by the readers only: the DAG-time probe (qc/probe.py) uses this module's
# header helpers, and loading anndata there would slow every `snakemake` call
if TYPE_CHECKING:
    import anndata as ad

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The files of a 10x mtx directory: (name in messages, stems tried in order, each also as .gz).
MTX_FILES = (
    ("matrix.mtx[.gz]", ("matrix.mtx",)),
    ("barcodes.tsv[.gz]", ("barcodes.tsv",)),
    ("features.tsv[.gz] or genes.tsv", ("features.tsv", "genes.tsv")),
)
# var columns an .h5ad may keep its gene symbols and gene ids in, first match wins.
SYMBOL_COLUMNS = ("gene_symbol", "gene_symbols", "feature_name", "symbol")
ID_COLUMNS = ("gene_id", "gene_ids", "ensembl_id")


def load_sample(
    *, matrix: str, output: str, sample_row: dict, covariates: list[str], log: logging.Logger
) -> None:
    """Rule load_sample: read one sample's matrix (any supported layout), check it, attach the sheet's
    covariate columns (as strings, in obs) and write it to `output`."""
    from .. import runtime

    try:
        adata = read_sample(
            matrix, counts_layer=sample_row.get("counts_layer"), genome=sample_row.get("genome")
        )
    except InputError as error:
        raise InputError(f"Sample {sample_row['sample']!r}: {error}") from None
    for column in covariates:
        adata.obs[column] = str(sample_row[column])
    log.info(
        "sample %s: %d barcodes x %d genes from %s", sample_row["sample"], adata.n_obs, adata.n_vars, matrix
    )
    runtime.write_h5ad(adata, output)


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
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise unreadable(f"Input {path}", "could not be opened", exc) from None
    if head != HDF5_SIGNATURE:
        raise InputError(
            f"Input {path} is not an HDF5 file (wrong format behind the {path.suffix} extension, or a corrupt "
            "or truncated download); re-export or re-download it."
        )
    return "h5ad" if suffixes == ".h5ad" else "10x_h5"


def read_sample(
    path: str | Path, *, counts_layer: str | None = None, genome: str | None = None
) -> ad.AnnData:
    """Read and check one sample's raw counts; raise InputError naming the file on bad input.

    Writes: uns["input"] = {"path", "format"} of the object it returns.
    """
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
    except READ_ERRORS as exc:
        raise unreadable(f"Input {path}", f"could not be read as {fmt}", exc) from exc
    adata.uns["input"] = {"path": str(path), "format": fmt}
    return check_counts(adata, path)


def find_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    """The first of `stems` (or its .gz) that exists in `folder`."""
    for stem in stems:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.exists():
                return candidate
    return None


def find_mtx_files(folder: Path) -> tuple[Path, Path, Path]:
    """(matrix, barcodes, features) of a 10x mtx directory; InputError naming the first one missing."""
    found = []
    for name, stems in MTX_FILES:
        path = find_file(folder, stems)
        if path is None:
            raise InputError(
                f"10x mtx directory {folder} has no {name}; point the sample sheet at a complete Cell Ranger "
                "output folder (matrix.mtx, barcodes.tsv and features.tsv/genes.tsv)."
            )
        found.append(path)
    matrix_file, barcodes_file, features_file = found
    return matrix_file, barcodes_file, features_file


# The Matrix Market header of a count matrix, as Cell Ranger writes it: sparse coordinates with a
# value per entry, genes x cells ("real" is accepted: the values are then checked to be integers).
MTX_FIELDS = ("integer", "real", "double")


def check_mtx_banner(banner: str, matrix_file: Path) -> None:
    """InputError unless `banner` (the file's first line) declares a count matrix:
    %%MatrixMarket matrix coordinate integer|real general."""
    tokens = banner.strip().lower().split()
    if not tokens or tokens[0] != "%%matrixmarket":
        raise InputError(f"{matrix_file} is not a Matrix Market file (its first line is {banner[:60]!r}).")
    if tokens[1:3] == ["matrix", "coordinate"] and len(tokens) == 5 and tokens[3] in MTX_FIELDS:
        if tokens[4] == "general":
            return
    why = {
        "pattern": "a 'pattern' matrix stores where counts are, not the counts (every count would read as 1)",
        "array": "an 'array' matrix is dense, not the sparse coordinates of a count matrix",
        "complex": "a 'complex' matrix holds no counts",
    }
    reason = next(
        (text for word, text in why.items() if word in tokens),
        "it is not a general (genes x cells) coordinate matrix of integer counts",
    )
    raise InputError(
        f"{matrix_file}: its Matrix Market header is {banner.strip()[:80]!r}, but a count matrix must be "
        f"'%%MatrixMarket matrix coordinate integer general' as Cell Ranger writes it: {reason}. Export the "
        "raw counts again (Cell Ranger's filtered_feature_bc_matrix, or scipy.io.mmwrite of the integer counts)."
    )


def open_maybe_gzipped(path: Path, mode: str = "rt"):
    """`path` opened for reading, through gzip when its name ends in .gz (10x folders hold both)."""
    import gzip

    return (gzip.open if path.name.endswith(".gz") else open)(path, mode)


def read_mtx_counts(matrix_file: Path):
    """The counts of a Matrix Market file (gzipped or not) as cells x genes CSR, after check_mtx_banner."""
    with open_maybe_gzipped(matrix_file) as handle:
        check_mtx_banner(handle.readline(), matrix_file)
    # scipy reads .mtx and .mtx.gz by name; mtx files are genes x cells.
    return sp.csr_matrix(scipy.io.mmread(str(matrix_file)).T, dtype=np.float32)


def count_lines(path: Path) -> int:
    """Non-blank lines of a text file, gzipped or not (what read_text_table reads as rows)."""
    with open_maybe_gzipped(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_text_table(path: Path) -> pd.DataFrame:
    """A headerless TSV of a 10x folder (barcodes, features) as text: a gene named NA stays "NA"."""
    return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)


def read_part(folder: Path, file: Path, reader):
    """`reader(file)` for one file of a 10x mtx folder; an InputError naming the folder and the file
    when the file is damaged (see errors.READ_ERRORS)."""
    try:
        return reader(file)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise unreadable(f"Input {folder}: {file.name}", "could not be read", exc) from exc


def unreadable(what: str, failed: str, exc: BaseException) -> InputError:
    """The InputError for a file a reader failed on: permission denied, or damaged (errors.READ_ERRORS)."""
    if isinstance(exc, PermissionError):
        return InputError(
            f"{what} cannot be read: permission denied ({exc.strerror}); make it readable for the user "
            "running Snakemake (e.g. chmod a+r), or copy it somewhere readable."
        )
    return InputError(
        f"{what} {failed} ({type(exc).__name__}: {exc}); the file may be corrupt, truncated or of another "
        "format. Copy or export it again."
    )


def refuse_other_layout(path: Path, groups, fmt: str) -> None:
    """InputError for an HDF5 file whose layout is the other supported format's: an AnnData saved
    as .h5, or a Cell Ranger matrix saved as .h5ad (the extension decides the reader)."""
    groups = set(groups)
    if fmt == "10x_h5" and "matrix" not in groups and {"obs", "var"} <= groups:
        raise InputError(
            f"Input {path} is an AnnData file (groups {', '.join(sorted(groups))}) with a .h5 extension; "
            "rename it to .h5ad (and name the layer with raw counts in counts_layer if X is not)."
        )
    if fmt == "h5ad" and "X" not in groups and "matrix" in groups:
        raise InputError(
            f"Input {path} is a Cell Ranger matrix (group 'matrix') with an .h5ad extension; rename it to .h5."
        )


def read_10x_mtx_dir(folder: Path) -> ad.AnnData:
    """Read a Cell Ranger mtx directory (v2 genes.tsv or v3 features.tsv, gzipped or not)."""
    import anndata as ad

    matrix_file, barcodes_file, features_file = find_mtx_files(folder)
    matrix = read_part(folder, matrix_file, read_mtx_counts)
    barcodes = read_part(folder, barcodes_file, read_text_table).iloc[:, 0].to_numpy()
    features = read_part(folder, features_file, read_text_table)
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
    import anndata as ad
    import h5py

    with h5py.File(path, "r") as handle:
        groups = list(handle.keys())
        if "matrix" in groups:
            group = handle["matrix"]
            features = group["features"]
            gene_ids = decode_text(features["id"][:])
            symbols = decode_text(features["name"][:])
            types = (
                decode_text(features["feature_type"][:])
                if "feature_type" in features
                else np.full(len(gene_ids), GENE_EXPRESSION)
            )
        else:
            genome = _v2_genome(path, groups, genome)
            group = handle[genome]
            if "genes" not in group:
                raise InputError(
                    f"Input {path}: group {genome!r} is not a Cell Ranger v2 matrix (no 'genes')."
                )
            gene_ids = decode_text(group["genes"][:])
            symbols = decode_text(group["gene_names"][:])
            types = np.full(len(gene_ids), GENE_EXPRESSION)
        n_genes, n_cells = (int(v) for v in group["shape"][:])
        # Cell Ranger stores genes x cells in CSC, which is cells x genes in CSR.
        matrix = sp.csr_matrix(
            (group["data"][:].astype(np.float32), group["indices"][:], group["indptr"][:]),
            shape=(n_cells, n_genes),
        )
        barcodes = decode_text(group["barcodes"][:])
    adata = ad.AnnData(
        X=matrix,
        obs=pd.DataFrame(index=pd.Index(barcodes)),
        var=pd.DataFrame({"gene_id": gene_ids, "gene_symbol": symbols, "feature_types": types}),
    )
    return _standardise_var(_gene_expression_only(adata))


def decode_text(values: np.ndarray) -> np.ndarray:
    """Strings of an HDF5 text dataset: Cell Ranger stores names as bytes in UTF-8 (numpy's
    astype(str) would decode them as ASCII and fail on a name such as "naïve")."""
    values = np.asarray(values)
    if values.dtype.kind in ("S", "O"):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=str)
    return values.astype(str)


def _v2_genome(path: Path, groups: list[str], genome: str | None) -> str:
    """The genome group to read from a Cell Ranger v2 .h5 (one group per genome)."""
    refuse_other_layout(path, groups, "10x_h5")
    if not groups:
        raise InputError(f"Input {path} is an HDF5 file with no groups; it is not a Cell Ranger matrix.")
    if genome is None:
        if len(groups) > 1:
            raise InputError(
                f"Input {path} holds several genomes ({', '.join(groups)}); name one in the sample "
                "sheet's genome column."
            )
        genome = groups[0]
    if genome not in groups:
        raise InputError(f"Input {path} has no genome {genome!r}; it has {', '.join(groups)}.")
    return genome


def var_columns(var: pd.DataFrame) -> tuple[str | None, str | None]:
    """(symbol column, id column) of an .h5ad's var (SYMBOL_COLUMNS, ID_COLUMNS; None: not there)."""
    symbol_column = next((c for c in SYMBOL_COLUMNS if c in var), None)
    id_column = next((c for c in ID_COLUMNS if c in var), None)
    return symbol_column, id_column


def read_h5ad_counts(path: Path, counts_layer: str | None = None) -> ad.AnnData:
    """Read an .h5ad, taking raw counts from X or from `counts_layer`."""
    import anndata as ad

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
    if not is_integer_valued(matrix):
        _refuse_non_counts(adata, path, counts_layer)
    var = adata.var.copy()
    symbol_column, id_column = var_columns(var)
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


def _refuse_non_counts(adata: ad.AnnData, path: Path, counts_layer: str | None) -> None:
    """InputError for an .h5ad whose chosen matrix is not counts, naming the layers that are."""
    hints = [name for name, layer in adata.layers.items() if is_integer_valued(layer)]
    if adata.raw is not None and is_integer_valued(adata.raw.X):
        hints.append(".raw (not supported directly: move it to a layer)")
    where = f"layer {counts_layer!r}" if counts_layer else "X"
    hint = f" Layers that hold integer counts: {', '.join(hints)}; name one in counts_layer." if hints else ""
    raise InputError(
        f"Input {path}: {where} does not hold raw integer counts (it looks normalised or log-transformed); "
        f"sccohort needs raw UMI counts.{hint}"
    )


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


def check_count_values(values: np.ndarray, path: str | Path, checked: str = "") -> None:
    """Refuse negative or non-integer values (normalised, log-transformed or corrected data).

    counts.is_integer_valued decides; the messages are the input-specific ones the user sees for a
    sample's file (naming it and what to point the sample sheet at), which differ from the shared
    counts.check_integer_counts wording. `checked` says how much was looked at (DAG-time heads).
    """
    values = np.asarray(values)
    if is_integer_valued(values):
        return
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"Input {path}: the count matrix is not numeric ({values.dtype}).")
    if np.any(values < 0):
        raise InputError(
            f"Input {path} contains negative counts{checked}; sccohort needs raw UMI counts, not scaled or "
            "corrected values. Point the sample sheet at the Cell Ranger output."
        )
    raise InputError(
        f"Input {path} contains non-integer values{checked} (already normalised or corrected data?); "
        "sccohort needs raw UMI counts. For an .h5ad, name the layer with raw counts in the counts_layer column."
    )


def check_counts(adata: ad.AnnData, path: str | Path) -> ad.AnnData:
    """Refuse empty matrices, non-integer or negative counts and duplicate barcodes.

    Writes: X's duplicate entries summed and its indices sorted, in place.
    """
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
