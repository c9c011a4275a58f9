"""The query's raw counts for the model-based methods (CellTypist, reference label transfer)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..counts import is_integer_valued
from ..errors import InputError

# Values checked for integers: a sample of the stored values is enough to tell counts from
# normalised data, and the check stays cheap on a large cohort.
INTEGER_CHECK_VALUES = 100_000


def query_counts(adata, *, layer: str = "counts"):
    """Raw counts of the query (layers[layer]); InputError when absent or not integer-valued."""
    if layer not in adata.layers:
        raise InputError(
            f"The clustered object has no layers[{layer!r}] with raw counts, which CellTypist and reference "
            "transfer need; re-run the cohort stage."
        )
    counts = adata.layers[layer]
    if not is_integer_valued(counts, n_values=INTEGER_CHECK_VALUES):
        raise InputError(f"layers[{layer!r}] of the clustered object is not integer counts.")
    return counts


def library_sizes(adata, counts) -> np.ndarray:
    """Per-cell library size over all genes: obs total_counts (from QC, before gene filtering) when
    it is at least the counts' row sum, else the row sum."""
    row_sums = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    if "total_counts" in adata.obs:
        total = pd.to_numeric(adata.obs["total_counts"], errors="coerce").to_numpy(dtype=np.float64)
        if np.all(np.isfinite(total)) and np.all(total >= row_sums - 0.5):
            return total
    return row_sums
