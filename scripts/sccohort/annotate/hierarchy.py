"""Marker-based cell types, lineage first, then subtype; decided per cell, reported per cluster.

Every cell starts at the root of the marker tree (sccohort.annotate.tree) and moves down one node
at a time. At a node N with children c1..ck (the lineages at the root; CD4_T and CD8_T at T):

1. Scores of the children over N's cells (sccohort.annotate.scores: whole-cohort statistics at
   the root, statistics inside N below it).
2. Unit label: each annotation unit (sccohort.annotate.units) takes the child with the highest
   mean score over its cells in N. At the root the unit is Unknown when that score is below
   ``min_score`` or beats the runner-up by less than ``min_margin``; below the root a margin
   under ``min_margin`` leaves the unit at N (the children do not separate there).
3. Own label: each cell's scores smoothed over the kNN graph among N's cells
   (``s <- (1 - w) s0 + w P s``, ``smoothing_steps`` times, P the row-normalised graph, w the
   ``smoothing_weight``), then its best child (at the root Unknown under the same thresholds).
4. Classifier (as Garnett does, Pliner et al. 2019, Nat Methods 16:983: marker-defined
   representative cells train a classifier that labels every cell): the cells whose unit label
   and own label agree are the training set; each child (and, at the root, Unknown) with at
   least ``min_training_cells`` such cells is a class (a unit its children's scores do not
   split has no say: its cells train with their own labels). A logistic regression on the
   cells' marker z-scores (among N's cells; plus ``classifier_pcs`` PCs of the embedding)
   predicts class probabilities, smoothed over the graph like the scores, then is fitted again
   on the cells whose own label agrees with its prediction (self-training). A cell whose unit label is a trained class, or that
   the units left at N, takes the most probable class, or stays at N when that probability is
   under ``min_probability``. A cell of an Unknown unit takes a class only when its own label
   agrees with it (so cells matching no marker set stay Unknown when no Unknown class was
   trained). Without a classifier (fewer than two classes, or ``classifier: false``) each cell
   follows its unit's label.

The unit labels and the own labels are also followed down the tree on their own (every cell of a
unit with its unit; every cell by its smoothed scores): the training set at N is the cells whose
two labels fall under the same child. ``cell_type_confidence`` is the lowest classifier
probability of the cell's label along its path (1 where no classifier had to choose, 0 for
Unknown).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..names import UNKNOWN
from .scores import child_scores, marker_matrix, standardise
from .tree import ROOT, MarkerTree
from .units import row_normalised

LOG = logging.getLogger("sccohort")


@dataclass(frozen=True)
class TreeSettings:
    """The options of the per-cell decisions (config annotation block)."""

    min_score: float = 0.1
    min_margin: float = 0.1
    smoothing_steps: int = 2
    smoothing_weight: float = 0.5
    classifier: bool = True
    min_training_cells: int = 10
    min_probability: float = 0.0
    n_pcs: int = 0
    # training cells per class at most (seeded sample): the fit stays fast on a large cohort
    max_training_cells: int = 5000
    seed: int = 0
    # fits: the first on the cells whose unit and own labels agree, each next one on the cells
    # whose own label agrees with the previous fit's (self-training)
    rounds: int = 2


@dataclass
class NodeData:
    """What the decisions at one node need: the node's cells, the children, their scores among
    those cells and the graph among them (row-normalised)."""

    node: str
    cells: np.ndarray
    children: list[str]
    scores: np.ndarray
    graph: sp.csr_matrix


class TreeContext:
    """The data shared by the three descents: marker expression, the tree, units, graph, PCs."""

    def __init__(self, adata, tree: MarkerTree, markers: pd.DataFrame, *, units, graph, embedding, settings):
        self.tree = tree
        self.settings = settings
        self.genes = list(dict.fromkeys(markers["gene"]))
        self.gene_index = {g: i for i, g in enumerate(self.genes)}
        self.block, self.present = marker_matrix(adata, self.genes)
        self.cohort_mean = self.block.mean(axis=0)
        self.units = np.asarray(units, dtype=str)
        self.graph = graph
        self.embedding = None if embedding is None else np.asarray(embedding, dtype=np.float64)

    def node_data(self, node: str, cells: np.ndarray) -> NodeData:
        root = node == ROOT
        block = self.block if root else self.block[cells]
        z, informative = standardise(block, self.present, centre=None if root else self.cohort_mean)
        scores = child_scores(z, informative, self.gene_index, self.tree, node, present_only=not root)
        graph = self.graph if root else self.graph[cells][:, cells]
        return NodeData(node, cells, list(self.tree.children[node]), scores, row_normalised(graph))

    def features(self, node: str, cells: np.ndarray) -> np.ndarray:
        """Classifier features of `cells` at `node`: the informative marker genes' z-scores among
        those cells and the first n_pcs PCs (scaled to the z-scores' overall unit variance)."""
        z, informative = standardise(self.block[cells], self.present)
        parts = [z[:, informative]]
        if self.embedding is not None and self.settings.n_pcs > 0:
            pcs = self.embedding[cells][:, : self.settings.n_pcs]
            pcs = pcs - pcs.mean(axis=0)
            parts.append(pcs / max(float(pcs.std()), 1e-12))
        return np.hstack(parts)


def smooth(values: np.ndarray, graph: sp.csr_matrix, *, steps: int, weight: float) -> np.ndarray:
    """values <- (1 - weight) * values0 + weight * graph @ values, `steps` times (a cell without
    neighbours keeps its own values)."""
    if steps <= 0 or weight <= 0:
        return values
    isolated = np.asarray(graph.sum(axis=1)).ravel() == 0
    out = values
    for _ in range(steps):
        spread = graph @ out
        spread[isolated] = out[isolated]
        out = (1 - weight) * values + weight * spread
    return out


def best_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the best column, its value, best minus second best) per row."""
    order = np.argsort(-scores, axis=1, kind="stable")
    rows = np.arange(scores.shape[0])
    best = scores[rows, order[:, 0]]
    second = scores[rows, order[:, 1]] if scores.shape[1] > 1 else np.full(len(best), -np.inf)
    return order[:, 0], best, best - second


def thresholded(data: NodeData, scores: np.ndarray, settings: TreeSettings) -> tuple[np.ndarray, np.ndarray]:
    """(label, reason) per row of `scores` (children of data.node): the best child; at the root
    Unknown below min_score or min_margin, below it the node itself when the margin is too small."""
    index, best, margin = best_two(scores)
    children = np.array(data.children, dtype=object)
    labels = children[index].astype(object)
    reasons = np.full(len(labels), "", dtype=object)
    if data.node == ROOT:
        low = best < settings.min_score
        labels[low] = UNKNOWN
        reasons[low] = f"best score < min_score {settings.min_score:g}"
        close = ~low & (margin < settings.min_margin)
        labels[close] = UNKNOWN
        reasons[close] = f"margin over the runner-up < min_margin {settings.min_margin:g}"
    else:
        close = margin < settings.min_margin
        labels[close] = data.node
        reasons[close] = (
            f"{data.node}: subtypes do not separate (margin < min_margin {settings.min_margin:g})"
        )
    return labels, reasons


def unit_decision(data: NodeData, units: np.ndarray, settings: TreeSettings) -> tuple[np.ndarray, np.ndarray]:
    """(label, reason) per cell of data.cells from its unit's mean scores among those cells."""
    unit_of = units[data.cells]
    means = pd.DataFrame(data.scores).groupby(unit_of, sort=True).mean()
    labels, reasons = thresholded(data, means.to_numpy(), settings)
    position = means.index.get_indexer(unit_of)
    return labels[position], reasons[position]


def own_decision(data: NodeData, settings: TreeSettings) -> tuple[np.ndarray, np.ndarray]:
    """(label, reason) per cell of data.cells from its own scores smoothed over the graph."""
    scores = smooth(data.scores, data.graph, steps=settings.smoothing_steps, weight=settings.smoothing_weight)
    return thresholded(data, scores, settings)


def under(tree: MarkerTree, labels: np.ndarray, children: list[str]) -> np.ndarray:
    """The child of the current node that each (deeper) label falls under ("" when none)."""
    owner = {}
    for child in children:
        for node in tree.descendants(child):
            owner[node] = child
    return np.array([owner.get(label, label if label == UNKNOWN else "") for label in labels], dtype=object)


@dataclass
class Decision:
    """The outcome at one node for its cells: label (a child, the node itself, or Unknown),
    reason, the classifier probability of the label (1 without classifier) and a summary row."""

    labels: np.ndarray
    reasons: np.ndarray
    probability: np.ndarray
    summary: dict


def classifier_decision(
    data: NodeData, context: TreeContext, *, unit_labels: np.ndarray, own_labels: np.ndarray
) -> Decision:
    """Step 4 of the module docstring at one node (`unit_labels`, `own_labels`: every cell's
    label from the unit and own descents)."""
    settings, tree, root = context.settings, context.tree, data.node == ROOT
    labels, reasons = unit_decision(data, context.units, settings)
    probability = np.ones(len(data.cells))
    summary = {"node": data.node or "(root)", "n_cells": len(data.cells), "classifier": False}
    unit_child = under(tree, unit_labels[data.cells], data.children)
    own_child = under(tree, own_labels[data.cells], data.children)
    allowed = data.children + ([UNKNOWN] if root else [])
    agree = (unit_child == own_child) & np.isin(unit_child, allowed)
    if not root:  # a unit that its children's scores do not split has no say: its cells' own labels do
        undecided = (unit_labels[data.cells] == data.node) & np.isin(own_child, data.children)
        unit_child = np.where(undecided, own_child, unit_child)
        agree |= undecided
    counts = pd.Series(unit_child[agree]).value_counts()
    classes = [c for c in allowed if counts.get(c, 0) >= settings.min_training_cells]
    summary["training_cells"] = "; ".join(f"{c} {int(counts.get(c, 0))}" for c in allowed if counts.get(c, 0))
    if not settings.classifier or len(classes) < 2:
        stays = labels == data.node
        if settings.classifier:
            reasons[stays] = (
                f"{data.node}: fewer than two subtypes with >= {settings.min_training_cells} cells whose unit "
                "and own labels agree (no classifier)"
            )
        summary["n_relabelled"] = 0
        return Decision(labels, _mark(reasons, labels, data.node, "unit"), probability, summary)
    target = unit_child
    train = _training_sample(agree & np.isin(target, classes), target, settings)
    features = context.features(data.node, data.cells)
    for _ in range(max(settings.rounds, 1)):
        if len(set(target[train])) < 2:  # the previous fit left one class: keep it
            break
        model = _fit(features[train], target[train])
        smoothed = smooth(
            _predict(model, features),
            data.graph,
            steps=settings.smoothing_steps,
            weight=settings.smoothing_weight,
        )
        predicted = model.classes_[smoothed.argmax(axis=1)].astype(object)
        target = predicted
        train = _training_sample((predicted == own_child) & np.isin(predicted, classes), predicted, settings)
    best = smoothed.max(axis=1)
    redo = np.isin(labels, classes) | (labels == data.node)
    if root and UNKNOWN not in classes:  # an Unknown unit's cell takes a type only when its own label agrees
        redo |= (labels == UNKNOWN) & (own_child == predicted)
    before = labels.copy()
    labels = np.where(redo, predicted, labels).astype(object)
    probability = np.where(redo, best, probability)
    kept_unknown = redo & (before == UNKNOWN) & (labels == UNKNOWN)  # the unit's reason still holds
    reasons = np.where(redo & ~kept_unknown, "", reasons).astype(object)
    unsure = redo & (best < settings.min_probability)
    labels[unsure] = UNKNOWN if root else data.node
    reasons[unsure] = (
        f"{data.node or 'lineage'}: classifier probability < min_probability {settings.min_probability:g}"
    )
    reasons[redo & (labels == UNKNOWN) & ~unsure & ~kept_unknown] = (
        "classifier: like the cells that match no marker set"
    )
    summary.update(
        classifier=True,
        classes=", ".join(map(str, model.classes_)),
        n_relabelled=int((labels != before).sum()),
    )
    return Decision(labels, _mark(reasons, labels, data.node, "classifier", redo), probability, summary)


def _mark(reasons: np.ndarray, labels: np.ndarray, node: str, how: str, by=None) -> np.ndarray:
    """Reasons of the cells that moved to a child: `how` (where `by` is given, only for those)."""
    moved = (labels != node) & (labels != UNKNOWN) & (reasons == "")
    if by is not None:
        reasons = reasons.copy()
        reasons[moved & ~by] = "unit"
        moved &= by
    reasons = reasons.copy()
    reasons[moved] = how
    return reasons


def _training_sample(mask: np.ndarray, labels: np.ndarray, settings: TreeSettings) -> np.ndarray:
    """`mask` with at most max_training_cells cells per class (a seeded sample)."""
    rng = np.random.default_rng(settings.seed)
    keep = mask.copy()
    for label in pd.unique(labels[mask]):
        members = np.flatnonzero(mask & (labels == label))
        if len(members) > settings.max_training_cells:
            dropped = rng.choice(members, len(members) - settings.max_training_cells, replace=False)
            keep[dropped] = False
    return keep


def _fit(features: np.ndarray, labels: np.ndarray):
    """L2-regularised multinomial logistic regression (lbfgs), on one BLAS thread: the fit is
    small, threads only contend, and one thread gives the same numbers whatever --cores is."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return LogisticRegression(C=0.1, max_iter=300, tol=1e-3).fit(features, labels.astype(str))


class Evidence:
    """Per cell, the scores behind its last decision (at the parent of its label, or where it
    stopped): the score of the child it took (its best child by score when it stayed at the node
    or is Unknown), and the best other child with its score."""

    def __init__(self, n: int):
        self.score = np.full(n, np.nan)
        self.second_type = np.full(n, "", dtype=object)
        self.second_score = np.full(n, np.nan)

    def record(self, data: NodeData, labels: np.ndarray) -> None:
        children = np.array(data.children, dtype=object)
        chosen = np.array([data.children.index(x) if x in data.children else -1 for x in labels])
        chosen = np.where(chosen >= 0, chosen, data.scores.argmax(axis=1))
        rows = np.arange(len(chosen))
        others = data.scores.copy()
        others[rows, chosen] = -np.inf
        self.score[data.cells] = data.scores[rows, chosen]
        if others.shape[1] > 1:
            second = others.argmax(axis=1)
            self.second_type[data.cells] = children[second]
            self.second_score[data.cells] = others[rows, second]
        else:
            self.second_type[data.cells] = ""
            self.second_score[data.cells] = np.nan


def _predict(model, features: np.ndarray) -> np.ndarray:
    """The model's class probabilities (one BLAS thread, see _fit)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return model.predict_proba(features)


def descend(context: TreeContext, decide) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Move every cell down the tree; `decide(data)` -> Decision for the cells at one node.
    Returns (label, reason, confidence, one summary row per node decided, Evidence)."""
    n = len(context.units)
    labels = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    confidence = np.ones(n)
    evidence = Evidence(n)
    summaries = []
    work = [(ROOT, np.arange(n))]
    while work:
        node, cells = work.pop(0)
        if not context.tree.children.get(node):
            labels[cells] = node
            continue
        data = context.node_data(node, cells)
        decision = decide(data)
        evidence.record(data, decision.labels)
        summaries.append(decision.summary)
        confidence[cells] = np.minimum(confidence[cells], decision.probability)
        reasons[cells] = np.where(decision.reasons != "", decision.reasons, reasons[cells])
        for label in (UNKNOWN, node):
            stays = cells[decision.labels == label]
            labels[stays] = label
        for child in context.tree.children[node]:
            members = cells[decision.labels == child]
            if len(members):
                work.append((child, members))
    confidence[labels == UNKNOWN] = 0.0
    return labels, reasons, confidence, summaries, evidence


def label_cells(
    adata, markers: pd.DataFrame, tree: MarkerTree, *, units, graph, embedding, settings: TreeSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell labels of the marker method (see the module docstring).

    Returns (cells, levels): cells, indexed like adata.obs, with columns cell_type, lineage,
    unit_label, own_label, confidence, reason and the evidence of the last decision (Evidence:
    score, second_type, second_score); levels, one row per node decided (cells, the classifier's
    classes and training cells, cells relabelled by it).
    """
    context = TreeContext(
        adata, tree, markers, units=units, graph=graph, embedding=embedding, settings=settings
    )

    def plain(decide):
        def run(data: NodeData) -> Decision:
            labels, reasons = decide(data)
            return Decision(labels, reasons, np.ones(len(data.cells)), {})

        return descend(context, run)[0]

    unit_labels = plain(lambda data: unit_decision(data, context.units, settings))
    own_labels = plain(lambda data: own_decision(data, settings))
    labels, reasons, confidence, summaries, evidence = descend(
        context,
        lambda data: classifier_decision(data, context, unit_labels=unit_labels, own_labels=own_labels),
    )
    lineage = np.array([UNKNOWN if x == UNKNOWN else tree.lineage(x) for x in labels], dtype=object)
    cells = pd.DataFrame(
        {
            "cell_type": labels,
            "lineage": lineage,
            "unit_label": unit_labels,
            "own_label": own_labels,
            "confidence": confidence.astype(np.float32),
            "reason": reasons,
            "score": evidence.score,
            "second_type": evidence.second_type,
            "second_score": evidence.second_score,
        },
        index=adata.obs_names,
    )
    return cells, pd.DataFrame(summaries)
