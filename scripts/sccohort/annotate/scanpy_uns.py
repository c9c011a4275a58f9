"""What makes results/cohort/integrated.h5ad read as if scanpy had made it: the colours of every
categorical in ``uns["<key>_colors"]`` (the report's colours: the same palette over the same
category order) and the cluster markers of cohort_markers in ``uns["rank_genes_groups"]``, in the
layout ``sc.tl.rank_genes_groups`` writes (so ``sc.pl.rank_genes_groups`` and
``sc.get.rank_genes_groups_df`` read them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import plotting

# markers.tsv column -> uns["rank_genes_groups"] field (scanpy's names)
RANK_GENES_FIELDS = {
    "score": "scores",
    "logfoldchange": "logfoldchanges",
    "pval": "pvals",
    "pval_adj": "pvals_adj",
}


def store_category_colours(adata, *, sample_order: Sequence[str] = (), skip: Sequence[str] = ()) -> list[str]:
    """Colours of every categorical obs column not in `skip`, in the order the report shows them.

    Writes: ``obs["sample"]`` ordered as the sample sheet (`sample_order`, the samples present),
    every other categorical's categories in natural order (numbers numerically, then
    alphabetically: Leiden clusters 0, 1, ..., 10), and ``uns["<key>_colors"]`` for each (the
    shared palette, as the report draws them). Returns the keys coloured.
    """
    keys = []
    for key in adata.obs.columns:
        column = adata.obs[key]
        if key in skip or not isinstance(column.dtype, pd.CategoricalDtype):
            continue
        present = set(column.astype(str).unique())
        if key == "sample" and sample_order:
            order = [s for s in sample_order if s in present]
            order += plotting.natural_order(sorted(present - set(order)))
        else:
            order = plotting.natural_order(column.cat.categories)
            order = [c for c in order if c in present]
        adata.obs[key] = pd.Categorical(column.astype(str), categories=order)
        plotting.store_colours(adata, key)
        keys.append(key)
    return keys


def rank_genes_groups_from_table(table: pd.DataFrame, *, groupby: str, groups: Sequence[str]) -> dict:
    """``uns["rank_genes_groups"]`` from cohort_markers' table (cluster, rank, gene, score,
    logfoldchange, pval, pval_adj): one record array per field with one column per group, the
    genes in rank order, as ``sc.tl.rank_genes_groups(method="wilcoxon")`` stores them.

    Every group gets as many rows as the longest; a group with fewer genes is padded with an empty
    name and NaN statistics. Groups without markers get only padding.
    """
    table = table.assign(cluster=table["cluster"].astype(str)).sort_values(["cluster", "rank"])
    groups = [str(g) for g in groups]
    per_group = {g: table[table["cluster"] == g] for g in groups}
    n = max([len(rows) for rows in per_group.values()] + [1])

    def records(column: str, dtype, fill):
        columns = {}
        for group, rows in per_group.items():
            values = np.full(n, fill, dtype=dtype)
            values[: len(rows)] = rows[column].to_numpy(dtype=dtype)
            columns[group] = values
        return pd.DataFrame(columns).to_records(index=False, column_dtypes="O" if dtype is object else dtype)

    result = {
        "params": {
            "groupby": groupby,
            "reference": "rest",
            "method": "wilcoxon",
            "use_raw": False,
            "corr_method": "benjamini-hochberg",
            "source": "results/cohort/markers.tsv (cohort_markers)",
        },
        "names": records("gene", object, ""),
    }
    for column, field in RANK_GENES_FIELDS.items():
        result[field] = records(column, np.float32 if field == "scores" else np.float64, np.nan)
    return result


def store_rank_genes_groups(adata, table: pd.DataFrame, *, groupby: str) -> None:
    """Writes: ``uns["rank_genes_groups"]`` from cohort_markers' table for the clusters of
    ``obs[groupby]`` (their category order)."""
    groups = plotting.categories(adata.obs[groupby])
    adata.uns["rank_genes_groups"] = rank_genes_groups_from_table(table, groupby=groupby, groups=groups)
