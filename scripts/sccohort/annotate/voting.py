"""Per-cell labels of the model-based methods voted over the clusters, and the agreement between
the methods (method_agreement.tsv)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..names import UNKNOWN
from .marker_table import label_order
from .scores import cluster_order


def majority_vote(labels: pd.Series, clusters: pd.Series, *, min_fraction: float = 0.0) -> pd.DataFrame:
    """Per cluster: the most frequent label and its fraction; Unknown when fraction < min_fraction.

    Returns columns cluster, label, majority, fraction, n_cells (clusters in cluster_order).
    """
    frame = pd.DataFrame(
        {"cluster": pd.Series(clusters).astype(str).to_numpy(), "label": np.asarray(labels, dtype=str)}
    )
    rows = []
    for cluster in cluster_order(frame["cluster"]):
        counts = frame.loc[frame["cluster"] == cluster, "label"].value_counts()
        top, fraction = counts.index[0], float(counts.iloc[0] / counts.sum())
        label = top if fraction >= min_fraction else UNKNOWN
        rows.append((cluster, label, top, fraction, int(counts.sum())))
    return pd.DataFrame(rows, columns=["cluster", "label", "majority", "fraction", "n_cells"])


def store_cluster_votes(
    adata, prediction: pd.DataFrame, *, cluster_key: str, min_fraction: float, method: str, score: str
) -> pd.DataFrame:
    """Write a per-cell method's labels into obs and label each cluster by majority vote.

    Writes: obs["cell_type_<method>_cell"] (per-cell label, categorical),
    obs["cell_type_<method>_<score>"] (the prediction's `score` column, float32) and
    obs["cell_type_<method>"] (the cluster's majority label, Unknown below `min_fraction`;
    categorical, Unknown last). Returns the majority-vote table.
    """
    clusters = adata.obs[cluster_key]
    votes = majority_vote(prediction["label"], clusters, min_fraction=min_fraction)
    label_of = dict(zip(votes["cluster"], votes["label"], strict=True))
    adata.obs[f"cell_type_{method}_cell"] = pd.Categorical(prediction["label"].to_numpy())
    adata.obs[f"cell_type_{method}_{score}"] = prediction[score].to_numpy(dtype=np.float32)
    majority = clusters.astype(str).map(label_of)
    adata.obs[f"cell_type_{method}"] = pd.Categorical(majority, categories=label_order(None, majority))
    return votes


def label_correspondence(reference: pd.Series, other: pd.Series) -> dict[str, str]:
    """For each label of `other`, the `reference` label (not Unknown) sharing the most cells with it."""
    table = pd.crosstab(np.asarray(other, dtype=str), np.asarray(reference, dtype=str))
    table = table.drop(columns=[UNKNOWN], errors="ignore")
    if table.shape[1] == 0:
        return {}
    return {str(label): str(row.idxmax()) for label, row in table.iterrows() if row.max() > 0}


def method_agreement(
    adata,
    *,
    cluster_key: str,
    methods: Mapping[str, str],
    per_cell: Mapping[str, pd.Series] | None = None,
    parents: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per cluster: each method's cluster label, its support and whether the methods agree.

    `methods` maps a method name to its obs column of cluster labels (the first is the marker
    method); `per_cell` maps a method to its per-cell labels (marker method: each cell's best
    type). ``<method>_support`` is the share of the cluster's cells whose per-cell label is the
    cluster label (or a child of it, for a parent label). Labels of the other methods come from
    other vocabularies, so each is translated to the marker label whose clusters hold most of the
    cells with that per-cell label (``<method>_as_markers``); ``agree`` is True when every method with a label other
    than Unknown says the same after translation (a parent label agrees with its children). The
    translation only flags clusters to inspect; it is not a label itself.
    """
    names = list(methods)
    per_cell = dict(per_cell or {})
    parents = dict(parents or {})
    clusters = adata.obs[cluster_key].astype(str)
    base = adata.obs[methods[names[0]]].astype(str)
    frame = pd.DataFrame({"cluster": cluster_order(clusters)})
    frame["n_cells"] = frame["cluster"].map(clusters.value_counts()).astype(int)
    translated = {}
    for name in names:
        labels = adata.obs[methods[name]].astype(str)
        first = labels.groupby(clusters.to_numpy()).agg(lambda s: s.value_counts().index[0])
        frame[f"{name}_label"] = frame["cluster"].map(first)
        if name in per_cell:
            cells = pd.Series(np.asarray(per_cell[name], dtype=str), index=adata.obs_names)
            frame[f"{name}_support"] = _support(
                cells, clusters, frame[f"{name}_label"], frame["cluster"], parents
            )
        if name == names[0]:
            translated[name] = list(frame[f"{name}_label"])
        else:
            # per-cell labels where available: cluster majorities hide most of the overlap
            mapping = label_correspondence(base, per_cell.get(name, labels))
            frame[f"{name}_as_markers"] = [
                UNKNOWN if x == UNKNOWN else mapping.get(x, x) for x in frame[f"{name}_label"]
            ]
            translated[name] = list(frame[f"{name}_as_markers"])
    frame["agree"] = [_labels_agree({translated[n][i] for n in names}, parents) for i in range(len(frame))]
    return frame


def _support(
    cells: pd.Series,
    clusters: pd.Series,
    cluster_labels: pd.Series,
    cluster_names: pd.Series,
    parents: Mapping[str, str],
) -> list[float]:
    """Per cluster: the share of its cells whose per-cell label (`cells`) is the cluster's label
    or a child of it (rounded to 4 digits; NaN for an Unknown cluster)."""
    cell_parent = cells.map(parents).fillna("")
    support = []
    for cluster, label in zip(cluster_names, cluster_labels, strict=True):
        members = (clusters == cluster).to_numpy()
        hits = (cells.to_numpy()[members] == label) | (cell_parent.to_numpy()[members] == label)
        support.append(round(float(hits.mean()), 4) if label != UNKNOWN else float("nan"))
    return support


def _labels_agree(values: set[str], parents: Mapping[str, str]) -> bool:
    """True when the labels other than Unknown are one label once children are read as their
    parent where that parent is itself among the labels."""
    values = values - {UNKNOWN}
    present_parents = values & set(parents.values())
    values = {parents[v] if parents.get(v) in present_parents else v for v in values}
    return len(values) <= 1
