"""Marker-based labels (the default method): per-cell marker scores and cluster labels.

Every cell gets one score per cell type of the marker table::

    z_g     = (x_g - mean_g) / sd_g, clipped at +10     (x = log-normalised expression in X,
                                                          mean/sd over all cells of the cohort)
    score_t = (sum_{g: w>0} w_tg * z_g  -  sum_{g: w<0} |w_tg| * max(z_g, 0)) / sum_{g: w>0} w_tg
              (sums over ALL markers of type t)

A negative marker only counts against a cell that expresses it above the average: the absence of
a negative marker is no evidence for a type (otherwise e.g. every non-NK cell would gain from
"NK genes low").
Positive markers absent from the data count as z = 0 (no evidence) but stay in the denominator, so
a type whose markers are mostly missing gets a score pulled towards zero instead of being decided by its
few remaining (often least specific) genes. The score is deterministic (no random control genes).
The per-cell scores are kept in ``obs["score_<cell_type>"]``.

Each cluster (Leiden at ``annotation.resolution``) gets the cell type with the highest mean score
over its cells, but only when that mean is >= ``min_score`` and exceeds the second-best type's mean
by >= ``min_margin``. When the margin is too small but both types share a ``parent`` (optional
column of the table, e.g. T for CD4_T and CD8_T) the cluster gets the parent label, provided the
best score beats every type outside that parent by the margin; otherwise the cluster is
``Unknown``. ``obs["cell_type_confidence"]`` is the cluster's margin (best minus second-best mean
score, in z units; the same for all cells of a cluster); ``cluster_annotation.tsv`` says why each
label was given (score, margin, runner-up, reason, the share of the cluster's cells whose own best
type agrees, the best type's markers that are up in the cluster, the cluster's top genes).

Because the z-scores are relative to the whole cohort, scores depend on composition: a type that
makes up most cells gets smaller z-scores for its markers. The margin rule compares types within
a cluster, which is what matters for the label.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..names import UNKNOWN, score_column
from .marker_table import label_order, match_markers, missing_marker_report, parents_of

LOG = logging.getLogger("sccohort")

Z_CLIP = 10.0
CLUSTER_TABLE_COLUMNS = [
    "cluster",
    "label",
    "best_type",
    "score",
    "second_type",
    "second_score",
    "margin",
    "cell_agreement",
    "n_cells",
    "reason",
]


def column_block(matrix, columns: np.ndarray) -> np.ndarray:
    """Dense float64 cells x len(columns) block (only marker genes: a thin slice)."""
    block = matrix[:, columns]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def marker_zscores(adata, genes: Sequence[str], *, layer: str | None = None, clip: float = Z_CLIP):
    """z-scores of the given genes over all cells (cells x genes, float32) and the constant genes
    (their z-scores are 0)."""
    matrix = adata.layers[layer] if layer else adata.X
    columns = adata.var_names.get_indexer(list(genes))
    block = column_block(matrix, columns)
    mean = block.mean(axis=0)
    sd = block.std(axis=0)
    constant = [g for g, s in zip(genes, sd, strict=True) if not s > 0]
    sd[~(sd > 0)] = 1.0
    z = (block - mean) / sd
    np.minimum(z, clip, out=z)
    z[:, [i for i, g in enumerate(genes) if g in set(constant)]] = 0.0
    return z.astype(np.float32), constant


def score_cells(adata, markers: pd.DataFrame, *, layer: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-cell marker scores (cells x cell types, in the marker table's type order, float32).

    Expects log-normalised expression in X (or `layer`). See the module docstring for the formula.
    Returns (scores, constant_genes).
    """
    present = markers.loc[markers["gene"].isin(adata.var_names)]
    if present.empty:
        raise InputError("None of the marker genes is in the data.")
    genes = list(dict.fromkeys(present["gene"]))
    z, constant = marker_zscores(adata, genes, layer=layer)
    gene_index = {g: i for i, g in enumerate(genes)}
    types = list(dict.fromkeys(markers["cell_type"]))
    scores = np.zeros((adata.n_obs, len(types)), dtype=np.float32)
    for j, cell_type in enumerate(types):
        table = markers.loc[markers["cell_type"] == cell_type]
        denominator = float(table.loc[table["weight"] > 0, "weight"].sum())
        table = table.loc[table["gene"].isin(gene_index)]
        if table.empty:
            continue
        weights = table["weight"].to_numpy(dtype=np.float32)
        block = z[:, [gene_index[g] for g in table["gene"]]]
        negative = weights < 0
        if negative.any():  # a negative marker only counts against a cell that expresses it
            block = block.copy()
            block[:, negative] = np.maximum(block[:, negative], 0)
        scores[:, j] = block @ weights / denominator
    return pd.DataFrame(scores, index=adata.obs_names, columns=types), constant


def cluster_order(clusters: pd.Series) -> list[str]:
    """The clusters present, as text: numeric names in numeric order, then the others sorted."""
    if isinstance(clusters.dtype, pd.CategoricalDtype):
        values = [str(c) for c in clusters.cat.categories if (clusters == c).any()]
    else:
        values = list(pd.unique(clusters.astype(str)))
    return sorted(values, key=lambda c: (0, int(c)) if re.fullmatch(r"\d+", c) else (1, c))


def assign_clusters(
    scores: pd.DataFrame,
    clusters: pd.Series,
    *,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    parents: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Label each cluster from its cells' mean scores.

    best type if its mean score >= min_score and exceeds the runner-up by >= min_margin. When the
    margin is too small but best and runner-up share a parent (e.g. CD4_T and CD8_T -> T), the
    cluster gets the parent label if the best score exceeds every type outside that parent by
    >= min_margin. Otherwise Unknown. Returns one row per cluster: cluster, label, best_type,
    score, second_type, second_score, margin, cell_agreement (fraction of the cluster's cells
    whose own best type is best_type), n_cells, reason.
    """
    parents = dict(parents or {})
    clusters = pd.Series(clusters, index=scores.index).astype(str)
    order = cluster_order(clusters)
    per_cell_best = scores.idxmax(axis=1)
    means = scores.groupby(clusters.to_numpy(), sort=False).mean().reindex(order)
    rows = []
    for cluster, row in means.iterrows():
        ranked = row.sort_values(ascending=False, kind="stable")
        best, score, second, second_score, margin = _best_two(ranked)
        members = clusters.to_numpy() == cluster
        agreement = float((per_cell_best.to_numpy()[members] == best).mean())
        label, reason = _cluster_label(ranked, min_margin=min_margin, min_score=min_score, parents=parents)
        rows.append(
            (cluster, label, best, score, second, second_score, margin, agreement, int(members.sum()), reason)
        )
    return pd.DataFrame(rows, columns=CLUSTER_TABLE_COLUMNS)


def _best_two(ranked: pd.Series) -> tuple[str, float, str, float, float]:
    """(best type, its score, runner-up, its score, margin) of mean scores sorted highest first;
    with a single type the runner-up is "" (score NaN) and the margin the best score."""
    best, score = ranked.index[0], float(ranked.iloc[0])
    second = ranked.index[1] if len(ranked) > 1 else ""
    second_score = float(ranked.iloc[1]) if len(ranked) > 1 else float("nan")
    margin = score - second_score if len(ranked) > 1 else score
    return best, score, second, second_score, margin


def _cluster_label(
    ranked: pd.Series, *, min_margin: float, min_score: float, parents: Mapping[str, str]
) -> tuple[str, str]:
    """(label, reason) of a cluster from its mean scores per type, highest first."""
    best, score, second, _, margin = _best_two(ranked)
    parent = parents.get(best)
    if score < min_score:
        return UNKNOWN, f"best score {score:.3g} < min_score {min_score:g}"
    if margin >= min_margin:
        return best, "assigned"
    if parent and parents.get(second) == parent:
        outside = ranked[[parents.get(t) != parent for t in ranked.index]]
        parent_margin = score - float(outside.iloc[0]) if len(outside) else score
        if parent_margin >= min_margin:
            return (
                parent,
                f"{best} vs {second} margin {margin:.3g} < min_margin {min_margin:g}: parent {parent}",
            )
        return (
            UNKNOWN,
            f"margin {margin:.3g} over {second} < min_margin {min_margin:g}; {parent} margin {parent_margin:.3g} too",
        )
    return UNKNOWN, f"margin {margin:.3g} over {second} < min_margin {min_margin:g}"


def check_cluster_key(adata, cluster_key: str) -> None:
    """InputError unless `cluster_key` is an obs column (naming the Leiden columns there are)."""
    if cluster_key not in adata.obs:
        available = [c for c in adata.obs.columns if str(c).startswith("leiden")]
        raise InputError(
            f"The clustered object has no obs column {cluster_key!r} (Leiden columns: "
            f"{', '.join(available) or 'none'}); set annotation.resolution to one of "
            "cohort.leiden_resolutions."
        )


def annotate_markers(
    adata,
    markers: pd.DataFrame,
    *,
    cluster_key: str,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    marker_path: str | Path = "marker table",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Marker-based annotation of the clusters in ``obs[cluster_key]``, in place.

    Writes: obs["score_<type>"] (per-cell score, float32, one per type of the table),
    obs["cell_type"] (the cluster's label, categorical in label_order) and
    obs["cell_type_confidence"] (the cluster's margin, float32).

    Returns (cluster table with supporting_markers, missing-marker report). Raises InputError when
    no marker gene is in the data (naming `marker_path`) or `cluster_key` is not an obs column.
    """
    check_cluster_key(adata, cluster_key)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    scores, constant = score_cells(adata, markers)
    missing = missing_marker_report(markers, adata.var_names, constant_genes=constant)
    for cell_type in scores.columns:
        adata.obs[score_column(cell_type)] = scores[cell_type].to_numpy()
    table = assign_clusters(
        scores,
        adata.obs[cluster_key],
        min_margin=min_margin,
        min_score=min_score,
        parents=parents_of(markers),
    )
    clusters = adata.obs[cluster_key].astype(str)
    table["supporting_markers"] = supporting_markers(adata, markers, clusters=clusters, table=table)
    label_of = dict(zip(table["cluster"], table["label"], strict=True))
    margin_of = dict(zip(table["cluster"], table["margin"], strict=True))
    labels = clusters.map(label_of)
    adata.obs["cell_type"] = pd.Categorical(labels, categories=label_order(markers, labels))
    adata.obs["cell_type_confidence"] = clusters.map(margin_of).astype(np.float32).to_numpy()
    n_present = present["gene"].nunique()
    LOG.info(
        "Markers: %d of %d genes found in the data; %d absent, %d constant.",
        n_present,
        markers["gene"].nunique(),
        markers["gene"].nunique() - n_present,
        len(constant),
    )
    return table, missing


def supporting_markers(
    adata, markers: pd.DataFrame, *, clusters: pd.Series, table: pd.DataFrame, min_z: float = 0.5
) -> list[str]:
    """Per cluster of `table`: the best type's positive markers whose mean z-score in the cluster
    (`clusters`: each cell's cluster) is >= min_z, highest first, as "GENE:z" (the evidence behind
    the label; empty = no gene clearly up)."""
    positives = markers.loc[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
    genes = list(dict.fromkeys(positives["gene"]))
    if not genes:
        return [""] * len(table)
    z, _ = marker_zscores(adata, genes)
    means = pd.DataFrame(z, columns=genes).groupby(clusters.to_numpy()).mean()
    out = []
    for cluster, best in zip(table["cluster"], table["best_type"], strict=True):
        own = positives.loc[positives["cell_type"] == best, "gene"]
        values = means.loc[cluster, list(own)].sort_values(ascending=False)
        out.append(",".join(f"{g}:{v:.2f}" for g, v in values.items() if v >= min_z))
    return out
