"""Count-matrix helpers shared by the stages: integer checks, log-normalisation, gene moments.

Every stage that reads raw counts (QC input, merge, annotation, pseudobulk) refuses anything
that is not finite, non-negative whole numbers through `check_integer_counts`, so the message
is the same wherever the fault is found.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import InputError


def matrix_values(matrix) -> np.ndarray:
    """The stored values of a sparse or dense matrix (the data array of a sparse one)."""
    return matrix.data if sp.issparse(matrix) else np.asarray(matrix)


def is_integer_valued(matrix, n_values: int | None = None) -> bool:
    """True when the (first `n_values`) stored values are finite, non-negative whole numbers."""
    values = matrix_values(matrix).ravel()
    if n_values is not None:
        values = values[:n_values]
    if values.size == 0:
        return True
    if not np.issubdtype(values.dtype, np.number):
        return False
    return bool(np.all(np.isfinite(values)) and np.all(values >= 0) and np.all(np.mod(values, 1) == 0))


def check_integer_counts(matrix, source: str, hint: str = "it must hold raw UMI counts") -> None:
    """Raise InputError naming `source` unless the matrix holds finite, non-negative whole numbers.

    `hint` says what to do (which file or layer holds the raw counts).
    """
    values = matrix_values(matrix)
    if values.size == 0:
        return
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"{source}: the count matrix is not numeric ({values.dtype}); {hint}.")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{source}: the count matrix has NaN or infinite values; {hint}.")
    if values.min() < 0:
        raise InputError(f"{source}: the count matrix has negative values; {hint}.")
    if not np.all(np.mod(values, 1) == 0):
        raise InputError(
            f"{source}: the count matrix has non-integer values (normalised or log data?); {hint}."
        )


def lognormalise(counts, library_size: np.ndarray | None = None, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p(counts / library size * target_sum) as CSR float32 (library size: row sums by default)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if library_size is None:
        library_size = np.asarray(counts.sum(axis=1)).ravel()
    library_size = np.asarray(library_size, dtype=np.float64)
    factor = np.divide(target_sum, library_size, out=np.zeros_like(library_size), where=library_size > 0)
    out = sp.csr_matrix(sp.diags(factor.astype(np.float32)) @ counts)
    np.log1p(out.data, out=out.data)
    return out


def mean_var(matrix: sp.csr_matrix, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance of a sparse matrix in float64 (ddof=1 like scanpy; 0 for the
    population variance)."""
    n = matrix.shape[0]
    sums = np.bincount(matrix.indices, weights=matrix.data, minlength=matrix.shape[1])
    sq = np.bincount(
        matrix.indices, weights=np.square(matrix.data, dtype=np.float64), minlength=matrix.shape[1]
    )
    mean = sums / n
    var = (sq / n - mean**2) * (n / max(n - ddof, 1))
    return mean, np.maximum(var, 0)
