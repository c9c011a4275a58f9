"""Integration diagnostics of the cohort stage and its figures.

Two per-cell scores, each computed on the kNN graph of the uncorrected PCs and on the graph of
the Harmony-corrected PCs:

- batch mixing (LISI-like): the inverse Simpson index of batch labels in the cell's neighbourhood
  (the cell and its k-1 nearest neighbours), rescaled to [0, 1] by (iSimpson - 1) / (n_batches - 1).
  It is summarised with the value expected if the neighbourhood were a random draw from the
  cells of the same cluster, the most a perfect integration can reach for that cluster (a cluster
  made of one sample's cells cannot mix, however good the integration);
- bio conservation: neighbourhood purity, the fraction of a cell's neighbours in its own cluster
  (and, when given, sharing its known label, e.g. a cell type).

Everything works from the graphs' neighbour lists, so it costs O(cells x k).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

LOG = logging.getLogger("sccohort")

GRAPH_LABELS = {"uncorrected": "uncorrected PCA", "harmony": "Harmony"}


def knn_from_graph(distances: sp.spmatrix) -> np.ndarray:
    """Neighbour indices (n_cells x k, padded with -1) from a kNN distance matrix (self not stored)."""
    distances = sp.csr_matrix(distances)
    lengths = np.diff(distances.indptr)
    k = int(lengths.max()) if len(lengths) else 0
    knn = np.full((distances.shape[0], k), -1, dtype=np.int64)
    rows = np.repeat(np.arange(distances.shape[0]), lengths)
    cols = np.arange(distances.nnz) - np.repeat(distances.indptr[:-1], lengths)
    knn[rows, cols] = distances.indices
    return knn


def _codes(labels: Sequence) -> tuple[np.ndarray, int]:
    codes, levels = pd.factorize(pd.Series(np.asarray(labels)).astype(str))
    return codes, len(levels)


def batch_mixing(knn: np.ndarray, batches: Sequence) -> np.ndarray:
    """Per-cell batch mixing in [0, 1] (NaN with a single batch); see the module docstring."""
    codes, n_levels = _codes(batches)
    if n_levels < 2:
        return np.full(knn.shape[0], np.nan)
    n = knn.shape[0]
    rows = np.repeat(np.arange(n), knn.shape[1])
    flat = knn.ravel()
    valid = flat >= 0
    rows = np.concatenate([np.arange(n), rows[valid]])  # the cell itself belongs to its neighbourhood
    labels = np.concatenate([codes, codes[flat[valid]]])
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, labels)), shape=(n, n_levels))
    size = np.asarray(counts.sum(axis=1)).ravel()
    simpson = np.asarray(counts.multiply(counts).sum(axis=1)).ravel() / size**2
    return (1 / simpson - 1) / (n_levels - 1)


def expected_batch_mixing(composition: Sequence[float], k: int, n_batches: int, n_draws: int = 4000) -> float:
    """batch_mixing expected for a neighbourhood of k cells drawn at random from a population.

    composition: cells per batch (integers: k cells drawn without replacement, multivariate
    hypergeometric) or proportions (with replacement, multinomial). Monte Carlo with `n_draws`
    draws from a fixed seed, so the value is deterministic (standard error < 0.005).
    """
    if n_batches < 2:
        return float("nan")
    composition = np.asarray(composition, dtype=float)
    rng = np.random.default_rng(0)
    k = int(max(k, 1))
    if np.allclose(composition, np.round(composition)) and composition.sum() >= k:
        draws = rng.multivariate_hypergeometric(composition.astype(np.int64), k, size=n_draws)
    else:
        draws = rng.multinomial(k, composition / composition.sum(), size=n_draws)
    simpson = np.sum(draws.astype(float) ** 2, axis=1) / k**2
    return float(np.mean((1 / simpson - 1) / (n_batches - 1)))


def neighbour_purity(knn: np.ndarray, labels: Sequence) -> np.ndarray:
    """Per-cell fraction of the kNN neighbours (self excluded) sharing the cell's label."""
    codes, _ = _codes(labels)
    valid = knn >= 0
    same = (codes[np.where(valid, knn, 0)] == codes[:, None]) & valid
    n = valid.sum(axis=1)
    return np.divide(same.sum(axis=1), n, out=np.full(len(n), np.nan), where=n > 0)


def integration_metrics(
    obs: pd.DataFrame,
    graphs: Mapping[str, sp.spmatrix],
    *,
    batch_key: str,
    cluster_key: str,
    label_keys: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Batch mixing and neighbourhood purity per graph, per cluster and overall.

    graphs: name -> kNN distance matrix, e.g. {"uncorrected": ..., "harmony": ...}.
    Returns (table, per-cell scores). One table row per graph and cluster of `cluster_key`, plus a
    row with cluster "all". Columns:
      graph, cluster, n_cells, batch_key, n_batches,
      batch_mixing           mean per-cell batch mixing,
      batch_mixing_expected  the same for random neighbourhoods within the cluster (for "all": the
                             mean over cells of their cluster's value),
      batch_mixing_ratio     batch_mixing / batch_mixing_expected (1 = as mixed as a random draw),
      cluster_purity         mean fraction of neighbours in the cell's cluster,
      label_purity_<key>     the same for each of `label_keys`.
    """
    batches = obs[batch_key].astype(str).to_numpy()
    clusters = obs[cluster_key].astype(str).to_numpy()
    n_batches = len(np.unique(batches))
    if isinstance(obs[cluster_key].dtype, pd.CategoricalDtype):
        cluster_order = [str(c) for c in obs[cluster_key].cat.categories]
    else:
        cluster_order = sorted(set(clusters))
    rows = []
    per_cell = pd.DataFrame(index=obs.index)
    for graph_name, distances in graphs.items():
        knn = knn_from_graph(distances)
        k = knn.shape[1] + 1
        mixing = batch_mixing(knn, batches)
        purity = neighbour_purity(knn, clusters)
        label_purity = {key: neighbour_purity(knn, obs[key].astype(str).to_numpy()) for key in label_keys}
        per_cell[f"batch_mixing_{graph_name}"] = mixing
        per_cell[f"cluster_purity_{graph_name}"] = purity
        expected_cell = np.full(len(obs), np.nan)
        for cluster in cluster_order:
            members = clusters == cluster
            if not members.any():
                continue
            composition = pd.Series(batches[members]).value_counts().to_numpy()
            expected = expected_batch_mixing(composition, min(k, int(members.sum())), n_batches)
            expected_cell[members] = expected
            rows.append(
                _row(
                    graph_name, cluster, members, batch_key, n_batches, mixing, expected, purity, label_purity
                )
            )
        expected_all = float(np.nanmean(expected_cell)) if n_batches > 1 else float("nan")
        everyone = np.ones(len(obs), dtype=bool)
        rows.append(
            _row(
                graph_name, "all", everyone, batch_key, n_batches, mixing, expected_all, purity, label_purity
            )
        )
    return pd.DataFrame(rows), per_cell


def _row(graph, cluster, members, batch_key, n_batches, mixing, expected, purity, label_purity) -> dict:
    observed = float(np.nanmean(mixing[members])) if n_batches > 1 else float("nan")
    row = {
        "graph": graph,
        "cluster": cluster,
        "n_cells": int(members.sum()),
        "batch_key": batch_key,
        "n_batches": int(n_batches),
        "batch_mixing": observed,
        "batch_mixing_expected": expected,
        "batch_mixing_ratio": observed / expected if expected and expected > 0 else float("nan"),
        "cluster_purity": float(np.nanmean(purity[members])),
    }
    for key, values in label_purity.items():
        row[f"label_purity_{key}"] = float(np.nanmean(values[members]))
    return row


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def plot_umaps(
    obs: pd.DataFrame,
    coords: np.ndarray,
    *,
    keys: Sequence[str],
    path,
    title_prefix: str = "UMAP",
    seed: int = 0,
) -> None:
    """One panel per obs column in `keys` on the same embedding, saved to `path` (PNG)."""
    from ..plotting import plt, save_figure, scatter_categorical

    order = np.random.default_rng(seed).permutation(len(obs))
    ncols = min(3, len(keys))
    nrows = int(np.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        scatter_categorical(ax, coords, obs[key], title=f"{title_prefix}: {key}", order=order)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    save_figure(fig, path)


def plot_before_after(
    obs: pd.DataFrame,
    before: np.ndarray,
    after: np.ndarray | None,
    *,
    batch_key: str,
    cluster_key: str,
    path,
    after_label: str = "Harmony",
    seed: int = 0,
) -> None:
    """2 x 2 panels: UMAP of the uncorrected and of the corrected PCs, coloured by batch and cluster."""
    from ..plotting import plt, save_figure, scatter_categorical

    order = np.random.default_rng(seed).permutation(len(obs))
    embeddings = [("uncorrected PCA", before)] + ([(after_label, after)] if after is not None else [])
    fig, axes = plt.subplots(2, len(embeddings), figsize=(5.6 * len(embeddings), 8.4), squeeze=False)
    for col, (label, coords) in enumerate(embeddings):
        legend = "right" if col == len(embeddings) - 1 else "none"
        for row, key in enumerate((batch_key, cluster_key)):
            scatter_categorical(
                axes[row, col], coords, obs[key], title=f"{label}: {key}", order=order, legend=legend
            )
    save_figure(fig, path)


def plot_metrics(table: pd.DataFrame, *, path) -> None:
    """Per-cluster batch mixing (with its expected value) and cluster purity, per graph."""
    from ..plotting import palette, plt, save_figure

    graphs = list(dict.fromkeys(table["graph"]))
    clusters = list(dict.fromkeys(table["cluster"]))
    x = np.arange(len(clusters))
    width = 0.8 / max(len(graphs), 1)
    colours = palette(graphs)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(clusters) + 2), 6.5), sharex=True)
    for i, graph in enumerate(graphs):
        sub = table[table["graph"] == graph].set_index("cluster").reindex(clusters)
        label = GRAPH_LABELS.get(graph, graph)
        axes[0].bar(x + i * width, sub["batch_mixing"], width, color=colours[graph], label=label)
        axes[1].bar(x + i * width, sub["cluster_purity"], width, color=colours[graph], label=label)
    expected = (
        table[table["graph"] == graphs[0]].set_index("cluster").reindex(clusters)["batch_mixing_expected"]
    )
    axes[0].scatter(
        x + 0.4 - width / 2, expected, marker="_", s=200, color="black", label="expected if random", zorder=3
    )
    axes[0].set_ylabel("batch mixing")
    axes[1].set_ylabel("cluster purity")
    for ax in axes:
        ax.set_ylim(0, 1.05)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1].set_xticks(x + 0.4 - width / 2)
    axes[1].set_xticklabels(clusters, rotation=90, fontsize=8)
    axes[1].set_xlabel("cluster")
    save_figure(fig, path)
