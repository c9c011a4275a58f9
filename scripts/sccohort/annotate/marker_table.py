"""The marker table: reading and checking it, matching it to the data's genes, the markers that
carry no information, the optional parents and the order in which labels are shown.

A marker table is a TSV with ``cell_type``, ``gene``, optional ``weight`` (negative = negative
marker), ``parent`` and ``cl_id`` (the type's Cell Ontology id, used by the CELLxGENE export);
further columns (e.g. ``source``) are kept for documentation only.

Parents make a tree (sccohort.annotate.tree): a parent may be a bare label (e.g. ``T`` for
``CD4_T`` and ``CD8_T``) or a cell type with rows of its own and a parent of its own (e.g. ``T``
with the T-cell genes, under ``T_NK``), so that lineages are told apart first and subtypes
within them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..names import UNKNOWN

MARKER_COLUMNS = ("cell_type", "gene", "weight")


def read_marker_table(path: str | Path) -> pd.DataFrame:
    """Read and check a marker table; return columns cell_type, gene, weight (+ any extra columns).

    Raises InputError (naming the file) for a missing file, missing columns, empty table,
    non-numeric or zero weights, duplicated (cell_type, gene) rows, a cell type without any
    positive marker, a cell type named with '/' or Unknown, or inconsistent parents.
    """
    path = Path(path)
    table = _read_tsv(path)
    table["weight"] = _checked_weights(table, path)
    _check_cell_types(table, path)
    if "parent" in table.columns:
        table["parent"] = _checked_parents(table, path)
    if "cl_id" in table.columns:
        table["cl_id"] = _checked_cl_ids(table, path)
    extra = [c for c in table.columns if c not in MARKER_COLUMNS]
    return table[list(MARKER_COLUMNS) + extra].reset_index(drop=True)


def _read_tsv(path: Path) -> pd.DataFrame:
    """The table's rows with both a cell_type and a gene (stripped text; weight "1" when absent)."""
    if not path.is_file():
        raise InputError(f"Marker table {path} does not exist; set annotation.markers to a TSV file.")
    try:
        # keep_default_na=False: a cell type or gene named NA, None or null stays that name
        table = pd.read_csv(
            path, sep="\t", dtype=str, comment="#", skip_blank_lines=True, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"Marker table {path} is not a readable TSV file: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("cell_type", "gene") if c not in table.columns]
    if missing:
        raise InputError(
            f"Marker table {path} lacks column(s) {', '.join(missing)} (it has {', '.join(table.columns)}); "
            "it needs tab-separated columns cell_type, gene and optionally weight."
        )
    if "weight" not in table.columns:
        table["weight"] = "1"
    for column in ("cell_type", "gene"):
        table[column] = table[column].fillna("").str.strip()
    table = table[(table["cell_type"] != "") & (table["gene"] != "")].copy()
    if table.empty:
        raise InputError(f"Marker table {path} has no rows with both a cell_type and a gene.")
    return table


def _checked_weights(table: pd.DataFrame, path: Path) -> pd.Series:
    """The weight column as floats (empty = 1); InputError for a non-numeric, infinite or zero one."""
    weights = pd.to_numeric(table["weight"].fillna("1").str.strip().replace("", "1"), errors="coerce")
    bad = table.loc[weights.isna() | ~np.isfinite(weights.fillna(0)) | (weights == 0)]
    if not bad.empty:
        row = bad.iloc[0]
        raise InputError(
            f"Marker table {path}: weight {row['weight']!r} of {row['cell_type']}/{row['gene']} is not a "
            "non-zero number (use a positive weight for markers, a negative one for negative markers)."
        )
    return weights.astype(float)


def _check_cell_types(table: pd.DataFrame, path: Path) -> None:
    """InputError for a duplicated (cell_type, gene), a type without positive marker, a type name
    with '/' or the reserved Unknown."""
    duplicated = table.duplicated(["cell_type", "gene"])
    if duplicated.any():
        row = table.loc[duplicated].iloc[0]
        raise InputError(
            f"Marker table {path} lists gene {row['gene']} twice for cell type {row['cell_type']}; "
            "keep one row per (cell_type, gene)."
        )
    positives = table.loc[table["weight"] > 0, "cell_type"].unique()
    no_positive = [t for t in table["cell_type"].unique() if t not in positives]
    if no_positive:
        raise InputError(
            f"Marker table {path}: cell type(s) {', '.join(no_positive)} have only negative markers; "
            "give each cell type at least one positive marker."
        )
    slashed = sorted(t for t in table["cell_type"].unique() if "/" in t)
    if slashed:
        # cell types name obs columns (score_<type>), and HDF5 reads "/" as a group separator
        raise InputError(
            f"Marker table {path}: cell type name(s) {', '.join(slashed)} contain '/'; rename them "
            "(e.g. 'CD4/CD8 T' -> 'CD4-CD8 T')."
        )
    if UNKNOWN in set(table["cell_type"]):
        raise InputError(
            f"Marker table {path} uses the reserved label {UNKNOWN!r} as a cell type; rename it."
        )


def _checked_parents(table: pd.DataFrame, path: Path) -> pd.Series:
    """The parent column with each type's one parent on all of its rows ("" = none); InputError
    for a type with two parents, a parent named Unknown or with '/', or a type that is its own
    ancestor. A parent may be a cell type of the table (a lineage with markers of its own)."""
    parent = table["parent"].fillna("").str.strip()
    for cell_type, values in parent.groupby(table["cell_type"], sort=False):
        names = set(values) - {""}
        if len(names) > 1:
            raise InputError(
                f"Marker table {path}: cell type {cell_type} has more than one parent ({', '.join(sorted(names))}); "
                "give each cell type one parent (or none)."
            )
        parent.loc[table["cell_type"] == cell_type] = names.pop() if names else ""
    bad = sorted(p for p in set(parent) - {""} if p == UNKNOWN or "/" in p)
    if bad:
        raise InputError(
            f"Marker table {path}: parent label(s) {', '.join(bad)} are the reserved {UNKNOWN!r} or contain '/'; "
            "rename them."
        )
    parent_of = dict(zip(table["cell_type"], parent, strict=True))
    for cell_type in parent_of:
        seen, node = [cell_type], parent_of[cell_type]
        while node:
            if node in seen:
                raise InputError(
                    f"Marker table {path}: the parents form a cycle ({' -> '.join(seen + [node])}); "
                    "a cell type cannot be its own ancestor."
                )
            seen.append(node)
            node = parent_of.get(node, "")
    return parent


def _checked_cl_ids(table: pd.DataFrame, path: Path) -> pd.Series:
    """The cl_id column with each type's one Cell Ontology id on all of its rows ("" = none);
    InputError for an id not of the form CL:0000000 or a type with two ids."""
    cl_id = table["cl_id"].fillna("").str.strip()
    bad = cl_id[(cl_id != "") & ~cl_id.str.fullmatch(r"CL:\d{7}")]
    if not bad.empty:
        row = table.loc[bad.index[0]]
        raise InputError(
            f"Marker table {path}: cl_id {bad.iloc[0]!r} of cell type {row['cell_type']} is not a Cell Ontology id "
            "(CL: and seven digits, e.g. CL:0000236 for B cell); leave it empty if the type has none."
        )
    for cell_type, values in cl_id.groupby(table["cell_type"], sort=False):
        ids = set(values) - {""}
        if len(ids) > 1:
            raise InputError(
                f"Marker table {path}: cell type {cell_type} has more than one cl_id ({', '.join(sorted(ids))}); "
                "give each cell type one Cell Ontology id."
            )
        cl_id.loc[table["cell_type"] == cell_type] = ids.pop() if ids else ""
    return cl_id


def cl_ids_of(markers: pd.DataFrame) -> dict[str, str]:
    """cell type -> Cell Ontology id (only types with one), from the optional cl_id column."""
    if "cl_id" not in markers.columns:
        return {}
    pairs = markers[["cell_type", "cl_id"]].drop_duplicates("cell_type")
    return {t: c for t, c in zip(pairs["cell_type"], pairs["cl_id"], strict=True) if isinstance(c, str) and c}


def parents_of(markers: pd.DataFrame) -> dict[str, str]:
    """cell type -> parent label (only types with a parent), from the optional parent column."""
    if "parent" not in markers.columns:
        return {}
    pairs = markers[["cell_type", "parent"]].drop_duplicates("cell_type")
    return {
        t: p for t, p in zip(pairs["cell_type"], pairs["parent"], strict=True) if isinstance(p, str) and p
    }


# A gene name made unique by appending its Ensembl id ("CCL5_ENSG00000161570", "CCL5.ENSG..."):
# scater's uniquifyFeatureNames does this for symbols that are duplicated in the annotation, so
# data converted from Bioconductor objects carry such names for some genes.
UNIQUIFIED_NAME = re.compile(r"^(?P<symbol>.+)[_.](ENS[A-Z]*G\d{6,})(\.\d+)?$")


def gene_names_in_data(genes: Sequence[str], data_genes: Sequence[str]) -> dict[str, str]:
    """marker gene -> the data's name of that gene, for the marker genes found in `data_genes`:
    the same name, else (when the data has no such name) a uniquified "<gene>_<Ensembl id>"."""
    data_genes = pd.Index(data_genes).astype(str)
    exact = set(data_genes)
    suffixed: dict[str, str] = {}
    for name in data_genes:
        match = UNIQUIFIED_NAME.match(name)
        if match:
            suffixed.setdefault(match.group("symbol"), name)
    out = {}
    for gene in dict.fromkeys(map(str, genes)):
        if gene in exact:
            out[gene] = gene
        elif gene in suffixed:
            out[gene] = suffixed[gene]
    return out


def resolve_marker_genes(markers: pd.DataFrame, data_genes: Sequence[str]) -> pd.DataFrame:
    """The marker table with each gene renamed to the data's name of it (gene_names_in_data):
    a symbol that the data carries only as "<symbol>_<Ensembl id>" is matched to that name."""
    names = gene_names_in_data(markers["gene"], data_genes)
    renamed = {g: n for g, n in names.items() if g != n}
    if not renamed:
        return markers
    out = markers.copy()
    out["gene"] = out["gene"].map(lambda g: renamed.get(g, g))
    return out


def match_markers(markers: pd.DataFrame, genes: Sequence[str], path: str | Path = "marker table"):
    """Split the marker table into genes found in the data and genes absent from it.

    Returns (present, missing): two marker tables (missing gains a ``status`` column); present
    names each gene as the data does (resolve_marker_genes). Raises InputError naming `path` when
    not a single marker gene is in `genes`.
    """
    genes = pd.Index(genes).astype(str)
    markers = resolve_marker_genes(markers, genes)
    found = markers["gene"].isin(genes)
    if not found.any():
        example = ", ".join(genes[:5])
        raise InputError(
            f"Marker table {path}: none of its {markers['gene'].nunique()} genes is in the data "
            f"({len(genes)} genes, e.g. {example}). Marker genes must use the same identifiers as the "
            "data's gene names (gene symbols of the same species); fix or replace the table."
        )
    present = markers.loc[found].reset_index(drop=True)
    missing = markers.loc[~found, ["cell_type", "gene", "weight"]].copy()
    missing["status"] = "absent from data"
    return present, missing.reset_index(drop=True)


def missing_marker_report(
    markers: pd.DataFrame, genes: Sequence[str], *, constant_genes: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per marker gene that carries no information: absent from `genes` (the data's), or
    present with the same value in every cell (`constant_genes`); plus one row (gene "*") per cell
    type with no informative positive marker. Columns cell_type, gene, weight, status."""
    genes = pd.Index(genes).astype(str)
    rows = []
    constant_genes = set(constant_genes)
    for row in markers.itertuples(index=False):
        if row.gene not in genes:
            rows.append((row.cell_type, row.gene, row.weight, "absent from data"))
        elif row.gene in constant_genes:
            rows.append((row.cell_type, row.gene, row.weight, "constant in data (not expressed)"))
    report = pd.DataFrame(rows, columns=["cell_type", "gene", "weight", "status"])
    uninformative = set(report["gene"])
    for cell_type, table in markers.groupby("cell_type", sort=False):
        positives = table.loc[table["weight"] > 0, "gene"]
        if positives.isin(uninformative).all():
            report.loc[len(report)] = (
                cell_type,
                "*",
                np.nan,
                "no positive marker informative: type scores 0",
            )
    return report


def label_order(markers: pd.DataFrame | None, labels: Sequence[str]) -> list[str]:
    """The distinct `labels` in marker-table order (each parent, and its parents, just before its
    first child), then any other label alphabetically, Unknown last."""
    present = set(map(str, labels))
    order: list[str] = []
    if markers is not None:
        parents = parents_of(markers)
        for cell_type in dict.fromkeys(markers["cell_type"]):
            chain = [cell_type]
            while parents.get(chain[0]) and parents[chain[0]] not in chain:
                chain.insert(0, parents[chain[0]])
            for name in chain:
                if name not in order:
                    order.append(name)
    order = [t for t in order if t in present]
    order += sorted(present - set(order) - {UNKNOWN})
    if UNKNOWN in present:
        order.append(UNKNOWN)
    return order
