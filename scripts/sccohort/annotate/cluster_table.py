"""cluster_annotation.tsv: the marker method's cluster table with each cluster's top genes and the
best type's markers found in the data."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

LOG = logging.getLogger("sccohort")


def top_genes_from_markers(table: pd.DataFrame, *, n_genes: int = 5) -> dict[str, list[str]]:
    """The first `n_genes` genes with a positive log fold change per cluster of a marker table
    (cohort_markers' markers.tsv: columns cluster, gene, rank, logfoldchange, ...)."""
    out: dict[str, list[str]] = {}
    for cluster, rows in table.groupby("cluster", sort=False):
        rows = rows.loc[rows["logfoldchange"] > 0].sort_values("rank")
        out[str(cluster)] = list(rows["gene"].head(n_genes))
    return out


def cluster_top_genes(adata, *, cluster_key: str, n_genes: int = 5) -> dict[str, list[str]]:
    """Top genes of each cluster vs the rest: the first `n_genes` with a positive log fold change
    among the 25 (or `n_genes`, if more) best by Wilcoxon score on log-normalised X.

    For an annotation resolution that cohort_markers does not test: the statistics of its test
    (Wilcoxon of each cluster against the rest, tie_correct=False, every gene), computed by
    scanpy's rank_genes_groups. Clusters of fewer than 2 cells get no top genes; with fewer than
    two such clusters no cluster does. `adata` is not modified.
    """
    import anndata as ad
    import scanpy as sc

    groups_of = adata.obs[cluster_key]
    if not isinstance(groups_of.dtype, pd.CategoricalDtype):
        groups_of = groups_of.astype(str).astype("category")
    sizes = groups_of.value_counts()
    groups = [str(g) for g in groups_of.cat.categories if sizes.get(g, 0) >= 2]
    if len(groups) < 2 or groups_of.nunique() < 2:
        LOG.warning("Top genes: fewer than two clusters with 2+ cells; no cluster has top genes.")
        return {}
    matrix = adata.X
    if sp.issparse(matrix) and np.any(matrix.data == 0):
        matrix = matrix.copy()  # rank_genes_groups drops stored zeros in place; X is written as read
    light = ad.AnnData(
        X=matrix,
        obs=pd.DataFrame({cluster_key: groups_of.values}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )
    sc.tl.rank_genes_groups(
        light,
        cluster_key,
        groups=groups,
        reference="rest",
        method="wilcoxon",
        n_genes=max(25, n_genes),
        tie_correct=False,
        use_raw=False,
    )
    result = light.uns["rank_genes_groups"]
    out = {}
    for group in groups:
        names, changes = np.asarray(result["names"][group]), np.asarray(result["logfoldchanges"][group])
        out[group] = [str(gene) for gene, change in zip(names, changes, strict=True) if change > 0][:n_genes]
    return out


def cluster_annotation_table(
    table: pd.DataFrame, *, top_genes: Mapping[str, Sequence[str]], present_markers: pd.DataFrame
) -> pd.DataFrame:
    """The cluster table as written to cluster_annotation.tsv: rounded, with top_markers (the
    cluster's `top_genes`) and best_type_markers (the best type's positive markers among
    `present_markers`, the marker table's rows found in the data)."""
    out = table.copy()
    out["top_markers"] = out["cluster"].map(lambda c: ",".join(top_genes.get(str(c), [])))
    positives = present_markers.loc[present_markers["weight"] > 0]
    markers_of = positives.groupby("cell_type")["gene"].agg(lambda s: ",".join(s))
    out["best_type_markers"] = out["best_type"].map(markers_of).fillna("")
    for column in ("score", "second_score", "margin", "cell_agreement"):
        out[column] = out[column].astype(float).round(4)
    return out
