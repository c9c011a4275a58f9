"""The samples' gene sets: MT/ribosomal flags, the gene-overlap check (also run when the DAG is
built) and the union of the samples' genes with the join (pass 0 of the merge, var only)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..h5ad import read_elem
from ..names import GENE_EXPRESSION

LOG = logging.getLogger("sccohort")


# --------------------------------------------------------------------------------------------
# Gene flags and gene overlap
# --------------------------------------------------------------------------------------------
def mito_ribo_flags(
    symbols: Sequence[str], *, mt_prefix: str = "auto", ribo_prefixes: Sequence[str] = ("RPS", "RPL")
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of mitochondrial and ribosomal-protein genes from their symbols.

    Same rule as the per-sample QC: MT genes start with `mt_prefix` ("auto": "MT-" or "mt-"),
    ribosomal genes with one of `ribo_prefixes` (case-insensitive, so mouse Rps/Rpl match too).
    """
    symbols = pd.Index([str(s) for s in symbols])
    prefixes = ("MT-", "mt-") if mt_prefix in (None, "", "auto") else (str(mt_prefix),)
    mt = np.zeros(len(symbols), dtype=bool)
    for prefix in prefixes:
        mt |= np.asarray(symbols.str.startswith(prefix), dtype=bool)
    upper = symbols.str.upper()
    ribo = np.zeros(len(symbols), dtype=bool)
    for prefix in ribo_prefixes or ():
        ribo |= np.asarray(upper.str.startswith(str(prefix).upper()), dtype=bool)
    return mt, ribo & ~mt


def _overlap_report(sample_codes: Mapping[str, np.ndarray], n_samples_with: np.ndarray) -> str:
    """Per sample: the share of its genes found in at least half of the other samples."""
    others = len(sample_codes) - 1
    if others < 1:
        return ""
    shares = {}
    for name, positions in sample_codes.items():
        codes = positions[positions >= 0]
        shares[name] = float(np.mean(n_samples_with[codes] - 1 >= others / 2)) if len(codes) else 0.0
    ordered = sorted(shares.items(), key=lambda item: item[1])
    return "; ".join(f"{name}: {share:.0%}" for name, share in ordered)


def gene_codes(gene_ids: Mapping[str, Sequence[str]]) -> tuple[dict[str, np.ndarray], int]:
    """Code genes by first appearance across samples: ({sample: code per gene}, number of genes)."""
    code_of: dict[str, int] = {}
    sample_codes = {}
    for sample, ids in gene_ids.items():
        sample_codes[sample] = np.array([code_of.setdefault(g, len(code_of)) for g in ids], dtype=np.int64)
    return sample_codes, len(code_of)


def check_gene_overlap(
    sample_codes: Mapping[str, np.ndarray], n_union: int, min_gene_overlap: float
) -> np.ndarray:
    """Raise InputError when the genes shared by all samples are fewer than `min_gene_overlap`
    times the smallest sample's genes (another species or reference); else return, per gene
    code, the number of samples holding it. Codes < 0 (features left out) are ignored.

    Run on the input files' gene lists when the DAG is built and again on the filtered files
    by the merge.
    """
    n_samples_with = np.zeros(n_union, dtype=np.int64)
    n_genes = {}
    for sample, positions in sample_codes.items():
        codes = np.unique(positions[positions >= 0])
        n_samples_with[codes] += 1
        n_genes[sample] = len(codes)
    n_common = int((n_samples_with == len(sample_codes)).sum())
    if len(sample_codes) < 2 or not n_genes:
        return n_samples_with
    smallest = min(n_genes, key=n_genes.get)
    n_smallest = n_genes[smallest]
    if n_common < min_gene_overlap * n_smallest:
        raise InputError(
            f"The {len(sample_codes)} samples share only {n_common} genes (by gene id), "
            f"{n_common / max(n_smallest, 1):.1%} of the {n_smallest} genes of the smallest sample "
            f"{smallest!r}; cohort.min_gene_overlap is {min_gene_overlap}. Samples with the lowest share of "
            f"genes found in most other samples come first: {_overlap_report(sample_codes, n_samples_with)}. "
            "Check that all samples were quantified against the same species and reference (Ensembl ids vs "
            "symbols), or lower cohort.min_gene_overlap."
        )
    return n_samples_with


# --------------------------------------------------------------------------------------------
# Pass 0 of the merge: the union of the samples' genes
# --------------------------------------------------------------------------------------------
def _sample_genes(path: Path, sample: str) -> pd.DataFrame:
    """One sample's genes: key (gene id), var_name, gene_symbol, feature_types, position in X."""
    var = read_elem(path, "var")
    if var is None or len(var) == 0:
        raise InputError(f"{path} (sample {sample!r}) has no genes in var.")
    names = pd.Index(var.index.astype(str))
    table = pd.DataFrame(
        {
            "position": np.arange(len(var)),
            "var_name": names,
            "gene_id": var["gene_id"].astype(str).to_numpy() if "gene_id" in var else names,
            "gene_symbol": var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in var else names,
            "feature_types": (
                var["feature_types"].astype(str).to_numpy() if "feature_types" in var else GENE_EXPRESSION
            ),
        }
    )
    for flag in ("mt", "ribo"):
        if flag in var and var[flag].dtype == bool:
            table[flag] = var[flag].to_numpy()
    table["key"] = table["gene_id"]
    duplicated = table["key"].duplicated(keep=False)
    if duplicated.any():
        # Ids repeated within one file (e.g. symbols used as ids): fall back to the unique var name.
        LOG.warning(
            "%s: %d genes share a gene_id with another gene (e.g. %s); they are matched by var name.",
            sample,
            int(duplicated.sum()),
            table.loc[duplicated, "key"].iloc[0],
        )
        table.loc[duplicated, "key"] = table.loc[duplicated, "var_name"]
    other = table["feature_types"] != GENE_EXPRESSION
    if other.any() and (~other).any():
        LOG.info(
            "%s: %d features that are not %r (%s) are left out of the cohort.",
            sample,
            int(other.sum()),
            GENE_EXPRESSION,
            ", ".join(sorted(table.loc[other, "feature_types"].unique())),
        )
        table = table.loc[~other]
    table = table.reset_index(drop=True)
    table.attrs["n_features"] = len(var)
    return table


@dataclass
class GeneSets:
    """Pass 0's result: the union of the samples' genes and where each sample's features go."""

    gene_rows: list[tuple]  # per gene code: var_name, gene_id, gene_symbol, feature_types, mt, ribo
    colmaps: dict[str, np.ndarray]  # per sample: feature position -> universe position, or -1
    n_features: dict[str, int]  # per sample: features in its file
    n_genes_per_sample: dict[str, int]  # per sample: its genes (features of other types left out)
    n_samples_with: np.ndarray  # per gene code: samples holding the gene
    in_universe: np.ndarray  # per gene code: kept by the join
    n_common: int  # genes in every sample

    @property
    def n_union(self) -> int:
        return len(self.gene_rows)

    @property
    def n_universe(self) -> int:
        return int(self.in_universe.sum())


def gene_sets(paths: Mapping[str, Path], *, join: str, min_gene_overlap: float) -> GeneSets:
    """Pass 0: the gene sets (var only), checked for overlap and joined.

    Genes are coded by first appearance (the union's order); per sample only an int array is kept
    (feature position -> gene code, -1 for features left out), so memory does not grow with
    samples x genes of Python strings.
    """
    code_of: dict[str, int] = {}
    gene_rows: list[tuple] = []  # annotation of each gene from the first sample holding it
    sample_codes: dict[str, np.ndarray] = {}
    n_features: dict[str, int] = {}
    n_genes_per_sample: dict[str, int] = {}
    for sample, path in paths.items():
        table = _sample_genes(path, sample)
        has_flags = {"mt", "ribo"} <= set(table.columns)
        codes = np.empty(len(table), dtype=np.int64)
        for i, row in enumerate(table.itertuples(index=False)):
            code = code_of.get(row.key)
            if code is None:
                code = code_of[row.key] = len(code_of)
                flags = (bool(row.mt), bool(row.ribo)) if has_flags else (None, None)
                gene_rows.append((row.var_name, row.gene_id, row.gene_symbol, row.feature_types, *flags))
            codes[i] = code
        n_features[sample] = int(table.attrs["n_features"])
        positions = np.full(n_features[sample], -1, dtype=np.int64)
        positions[table["position"].to_numpy()] = codes
        sample_codes[sample] = positions
        n_genes_per_sample[sample] = len(table)
        del table
    n_union = len(code_of)
    n_samples_with = check_gene_overlap(sample_codes, n_union, min_gene_overlap)
    in_all = n_samples_with == len(paths)
    n_common = int(in_all.sum())
    in_universe = in_all if join == "inner" else np.ones(n_union, dtype=bool)
    universe_index = np.full(n_union, -1, dtype=np.int64)  # gene code -> position in the universe
    universe_index[in_universe] = np.arange(int(in_universe.sum()))
    n_universe = int(in_universe.sum())
    LOG.info(
        "Gene sets: %d genes in the union, %d in every sample; %s join keeps %d (%d dropped by the join).",
        n_union,
        n_common,
        join,
        n_universe,
        n_union - n_universe,
    )
    colmaps: dict[str, np.ndarray] = {}
    for sample, positions in sample_codes.items():
        colmap = np.where(positions >= 0, universe_index[np.maximum(positions, 0)], -1)
        colmaps[sample] = colmap
        LOG.info(
            "%s: %d genes, %d of them in the merged gene set.",
            sample,
            n_genes_per_sample[sample],
            int((colmap >= 0).sum()),
        )
    return GeneSets(gene_rows, colmaps, n_features, n_genes_per_sample, n_samples_with, in_universe, n_common)
