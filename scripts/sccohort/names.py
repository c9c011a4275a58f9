"""Names and keys shared by the stages: obs columns, cell ids, file-safe names and fixed labels.

No stage logic lives here; every stage imports its names from this module so that a column
written by one stage is found by the next under the same spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .errors import InputError

# The label of cells and clusters that match no cell type (annotation, report, DE).
UNKNOWN = "Unknown"
# Columns of results/annotation/cluster_composition.tsv (annotate writes it, the report reads it):
# each cluster's cells per label, and why.
CLUSTER_COMPOSITION_COLUMNS = (
    "cluster",
    "label",
    "lineage",
    "n_cells",
    "fraction",
    "mean_confidence",
    "cell_agreement",
    "reason",
    "supporting_markers",
)
# obs columns of the per-cell marker scores: "score_<cell type>".
SCORE_PREFIX = "score_"
# 10x feature type of the genes sccohort analyses.
GENE_EXPRESSION = "Gene Expression"
# Sample-sheet columns stored as categoricals in the merged object and its UMAP tables.
SHEET_CATEGORICALS = ("sample", "condition", "donor", "batch")
# Columns of the workflow's own tables that hold names (runtime.read_table reads them as text, so
# sample "01" stays "01" and cluster "0" stays "0"); leiden_<res> columns are text too.
TEXT_COLUMNS = (
    *SHEET_CATEGORICALS,
    "barcode",
    "cluster",
    "gene",
    "gene_id",
    "gene_symbol",
    "cell_type",
    "label",
    "parent",
    "group",
    "group_file",
    "contrast",
    "factor",
    "test",
    "reference",
    "status",
    "reason",
    "fail_reason",
    "graph",
    "batch_key",
)
# Reasons in cells.tsv.gz's fail_reason, in the order they are joined with ';'.
REMOVAL_REASONS = (
    "low_counts",
    "high_counts",
    "low_genes",
    "high_genes",
    "high_pct_mt",
    "damaged",
    "high_pct_other_species",
    "doublet",
)
# Separates sample and group in pseudobulk sample ids; safe_name() never produces it.
PSEUDOBULK_SEPARATOR = "__"
# File names the DE stage writes itself beside the group files; no group may take them.
RESERVED_NAMES = frozenset({"summary", "all_groups", "figures", "pseudobulk"})
# Names no contrast may take: folders and files of results/de/ itself.
RESERVED_CONTRAST_NAMES = ("pseudobulk", "summary.tsv")


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


def score_column(cell_type: str) -> str:
    """obs column of a cell type's per-cell marker score: ``"score_<cell type>"``."""
    return f"{SCORE_PREFIX}{cell_type}"


def colours_key(key: str) -> str:
    """uns entry holding the colours of the categorical obs column `key` (scanpy's convention)."""
    return f"{key}_colors"


SAFE_NAME_LENGTH = 100


def safe_name(name: object) -> str:
    """A file-name-safe version of a group, level or contrast name.

    Every run of characters other than letters, digits, '.', '_' and '-' becomes one '_',
    '_' runs are collapsed, and leading/trailing '_', '.' and '-' are stripped, so
    "CD14 Mono" -> "CD14_Mono", "CD4+ T cells" -> "CD4_T_cells", "B cells (naive)" ->
    "B_cells_naive". A name with nothing left becomes "group"; a longer one is cut at
    SAFE_NAME_LENGTH characters. The result never contains
    "__" (the pseudobulk id separator). Different names can map to the same safe name;
    safe_names() makes a set of them unique.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
    text = re.sub(r"_+", "_", text).strip("_.-")
    # at most SAFE_NAME_LENGTH characters: a file name (with suffixes) must stay under 255 bytes
    return text[:SAFE_NAME_LENGTH].rstrip("_.-") or "group"


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
