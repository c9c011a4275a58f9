"""The standard scIB integration metrics (scib-metrics) before and after the batch correction,
with biological labels that do not come from the corrected graph.

The workflow's Leiden clusters are computed on the corrected graph, so a purity or silhouette of
those clusters favours the correction by construction. Here every graph is also judged with the
clusters of the uncorrected graph (Leiden at the same resolution on the uncorrected kNN graph),
and the table shows both label sets side by side, so neither embedding is judged only by its own
clusters:

- batch removal: iLISI (``scib_metrics.ilisi_knn``, scaled to [0, 1]), kBET acceptance rate
  (``scib_metrics.kbet``) on each kNN graph, silhouette of batches within labels
  (``scib_metrics.silhouette_batch``, with the uncorrected clusters as labels);
- bio conservation: graph connectivity (``scib_metrics.graph_connectivity``) and silhouette of
  labels (``scib_metrics.silhouette_label``) for each label set.

Silhouettes are O(cells^2): they are computed on a seeded subsample of at most `max_cells` cells.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

UNCORRECTED_LABELS = "leiden_uncorrected"


def neighbors_results(distances: sp.spmatrix):
    """scib-metrics' NeighborsResults from a scanpy kNN distance matrix (self not stored): the
    cell itself first at distance 0, then its neighbours; rows with fewer neighbours are padded
    with the cell itself."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    distances = sp.csr_matrix(distances)
    n = distances.shape[0]
    lengths = np.diff(distances.indptr)
    k = int(lengths.max()) + 1
    indices = np.repeat(np.arange(n)[:, None], k, axis=1)
    values = np.zeros((n, k), dtype=np.float32)
    rows = np.repeat(np.arange(n), lengths)
    cols = 1 + np.arange(distances.nnz) - np.repeat(distances.indptr[:-1], lengths)
    indices[rows, cols] = distances.indices
    values[rows, cols] = distances.data
    return NeighborsResults(indices=indices, distances=values)


def scib_table(
    *,
    graphs: Mapping[str, sp.spmatrix],
    embeddings: Mapping[str, np.ndarray],
    batches,
    label_sets: Mapping[str, object],
    max_cells: int = 20000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per graph (name as in `graphs`; `embeddings` holds the same names): scib_ilisi,
    scib_kbet, scib_silhouette_batch and, for each label set, scib_graph_connectivity_<labels>
    and scib_silhouette_label_<labels>. With a single batch the batch metrics are NaN."""
    # jax on the CPU, one thread (the rule has one): float32 reductions in the same order on any
    # machine, so two runs of the same inputs give the same table (tests/compare_results.py)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import scib_metrics

    batches = pd.Series(np.asarray(batches)).astype(str).to_numpy()
    labels = {
        name: pd.Series(np.asarray(values)).astype(str).to_numpy() for name, values in label_sets.items()
    }
    several = len(np.unique(batches)) > 1
    sample = np.sort(np.random.default_rng(seed).permutation(len(batches))[:max_cells])
    first_labels = next(iter(labels.values()))
    rows = []
    for name, distances in graphs.items():
        knn = neighbors_results(distances)
        embedding = np.asarray(embeddings[name], dtype=np.float32)[sample]
        row = {
            "graph": name,
            "scib_ilisi": float(scib_metrics.ilisi_knn(knn, batches)) if several else np.nan,
            "scib_kbet": float(scib_metrics.kbet(knn, batches)[0]) if several else np.nan,
            "scib_silhouette_batch": (
                float(scib_metrics.silhouette_batch(embedding, first_labels[sample], batches[sample]))
                if several
                else np.nan
            ),
        }
        for label_name, values in labels.items():
            row[f"scib_graph_connectivity_{label_name}"] = float(scib_metrics.graph_connectivity(knn, values))
            row[f"scib_silhouette_label_{label_name}"] = (
                float(scib_metrics.silhouette_label(embedding, values[sample]))
                if len(np.unique(values[sample])) > 1
                else np.nan
            )
        rows.append(row)
    # six decimals: beyond that a float32 metric carries no information
    return pd.DataFrame(rows).round(6)


def add_scib_columns(table: pd.DataFrame, scib: pd.DataFrame) -> pd.DataFrame:
    """integration_metrics' table with the scib columns on each graph's "all" row (NaN elsewhere:
    the scIB metrics are cohort-wide)."""
    overall = table["cluster"].astype(str) == "all"
    merged = table.copy()
    for column in [c for c in scib.columns if c != "graph"]:
        values = dict(zip(scib["graph"], scib[column], strict=True))
        merged[column] = np.where(overall, merged["graph"].map(values), np.nan)
    return merged
