"""The tables of the labels at the clusters users see: cluster_annotation.tsv (one row per cluster:
its labels, the evidence and the reason) and cluster_composition.tsv (one row per cluster and
label: how many of the cluster's cells got it and why), with each cluster's top genes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..names import UNKNOWN
from .scores import cluster_order

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


CLUSTER_COLUMNS = [
    "cluster",
    "label",
    "label_share",
    "labels",
    "lineage",
    "n_cells",
    "n_units",
    "best_type",
    "score",
    "second_type",
    "second_score",
    "margin",
    "cell_agreement",
    "mean_confidence",
    "reason",
]
COMPOSITION_COLUMNS = [
    "cluster",
    "label",
    "lineage",
    "n_cells",
    "fraction",
    "mean_confidence",
    "cell_agreement",
    "reason",
    "supporting_markers",
]


def cluster_composition(cells: pd.DataFrame, clusters: pd.Series, *, order: Sequence[str]) -> pd.DataFrame:
    """cluster_composition.tsv without supporting_markers: one row per (cluster, label) with the
    cells of that label, their share of the cluster, lineage, mean confidence, the share whose own
    label agrees with their unit's (cell_agreement) and the most common reason of their label.

    `cells`: label_cells' per-cell table; `clusters`: each cell's cluster; `order`: label order.
    """
    frame = cells.assign(
        cluster=np.asarray(clusters, dtype=str), agrees=cells["own_label"] == cells["unit_label"]
    )
    rows = []
    for cluster in cluster_order(frame["cluster"]):
        members = frame.loc[frame["cluster"] == cluster]
        present = set(members["cell_type"])
        for label in [x for x in order if x in present]:
            group = members.loc[members["cell_type"] == label]
            rows.append(
                (
                    cluster,
                    label,
                    group["lineage"].iloc[0],
                    len(group),
                    round(len(group) / len(members), 4),
                    round(float(group["confidence"].mean()), 4),
                    round(float(group["agrees"].mean()), 4),
                    group["reason"].value_counts().index[0],
                )
            )
    return pd.DataFrame(rows, columns=COMPOSITION_COLUMNS[:-1])


def cluster_summary(composition: pd.DataFrame, cells: pd.DataFrame, clusters: pd.Series) -> pd.DataFrame:
    """The cluster table (CLUSTER_COLUMNS): each cluster's most frequent label and its share, all
    its labels with their cells ("CD4_T 412 (63%), CD8_T 240 (37%)"), its number of units, the
    evidence of that label (best_type: the label's type where it was decided, or the best type
    there for Unknown and parent labels; score and runner-up: their mean scores over the cells
    with that label, at that level of the tree), the share of all its cells whose own label agrees
    with their unit's, the mean confidence, and the most common reason of the label's cells.

    `cells`: label_cells' per-cell table with the unit of each cell; `clusters`: each cell's cluster.
    """
    clusters = np.asarray(clusters, dtype=str)
    rows = []
    for cluster, parts in composition.groupby("cluster", sort=False):
        top = parts.sort_values("n_cells", ascending=False, kind="stable").iloc[0]
        members = cells.loc[clusters == cluster]
        labelled = members.loc[members["cell_type"] == top["label"]]
        chosen = labelled["second_type"].where(labelled["second_type"] != "")
        second = chosen.mode().iloc[0] if chosen.notna().any() else ""
        evidence = labelled.loc[labelled["cell_type"] == top["label"]]
        best = _best_type(evidence)
        score = float(evidence["score"].mean())
        second_score = (
            float(evidence.loc[evidence["second_type"] == second, "second_score"].mean())
            if second
            else np.nan
        )
        rows.append(
            (
                cluster,
                top["label"],
                float(top["fraction"]),
                ", ".join(
                    f"{r.label} {r.n_cells} ({100 * r.fraction:.0f}%)"
                    for r in parts.sort_values("n_cells", ascending=False, kind="stable").itertuples()
                ),
                top["lineage"],
                int(parts["n_cells"].sum()),
                int(members["unit"].nunique()) if "unit" in members else 1,
                best,
                score,
                second,
                second_score,
                score - second_score if second else score,
                float((members["own_label"] == members["unit_label"]).mean()),
                float(members["confidence"].mean()),
                top["reason"],
            )
        )
    table = pd.DataFrame(rows, columns=CLUSTER_COLUMNS)
    return table.set_index("cluster").loc[cluster_order(table["cluster"])].reset_index()


def _best_type(cells: pd.DataFrame) -> str:
    """The type the label's cells were scored best for: the label itself when it is a type the
    tree chose, else (Unknown, a parent) their most common own label."""
    label = cells["cell_type"].iloc[0]
    if label != UNKNOWN and (cells["own_label"] == label).any():
        return label
    return cells["own_label"].mode().iloc[0]


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
    for column in ("label_share", "score", "second_score", "margin", "cell_agreement", "mean_confidence"):
        if column in out:
            out[column] = out[column].astype(float).round(4)
    return out
