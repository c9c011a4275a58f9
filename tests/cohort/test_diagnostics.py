"""Tests of the integration diagnostics (sccohort.cohort.diagnostics): known values on constructed
neighbourhoods, and Harmony against the planted batch effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sccohort.cohort import diagnostics as im
from sccohort.cohort.cluster import graph_distances


def _metrics(adata):
    info = adata.uns["cohort"]
    graphs = {"uncorrected": graph_distances(adata, info["uncorrected_neighbors_key"])}
    if info["integration"] == "harmony":
        graphs["harmony"] = graph_distances(adata, "neighbors")
    table, _ = im.integration_metrics(
        adata.obs,
        graphs,
        batch_key="sample",
        cluster_key=info["default_cluster_key"],
        label_keys=["cell_type"],
    )
    return table


def test_harmony_mixes_samples_and_keeps_cell_types_apart(clustered):
    table = _metrics(clustered)
    overall = table[table["cluster"] == "all"].set_index("graph")
    before, after = overall.loc["uncorrected"], overall.loc["harmony"]
    # the planted effect separates the samples completely before integration
    assert before["batch_mixing_ratio"] < 0.15
    assert after["batch_mixing_ratio"] > before["batch_mixing_ratio"] + 0.4
    # known types stay apart: neighbours share the cell's published type as often as before
    assert after["label_purity_cell_type"] >= 0.8
    assert after["label_purity_cell_type"] >= before["label_purity_cell_type"] - 0.02
    per_cluster = table[(table["cluster"] != "all") & (table["n_cells"] >= 30)].pivot(
        index="cluster", columns="graph", values="batch_mixing"
    )
    assert (per_cluster["harmony"] > per_cluster["uncorrected"] + 0.3).all()


def _knn_matrix(neighbours: list[list[int]]) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(neighbours)), [len(n) for n in neighbours])
    cols = np.concatenate(neighbours)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(neighbours), len(neighbours)))


def test_batch_mixing_and_purity_known_values():
    # 4 cells of batch a, 4 of batch b. Segregated: neighbours from the own batch only.
    batches = np.array(list("aaaabbbb"))
    segregated = _knn_matrix(
        [[j for j in range(4) if j != i] if i < 4 else [j for j in range(4, 8) if j != i] for i in range(8)]
    )
    knn = im.knn_from_graph(segregated)
    np.testing.assert_allclose(im.batch_mixing(knn, batches), 0)
    # Balanced: each cell's neighbourhood (itself + 3) holds two cells of each batch.
    balanced = [[(i + 1) % 8, (i + 4) % 8, (i + 5) % 8] for i in range(8)]
    labels = np.array(list("abababab"))
    np.testing.assert_allclose(im.batch_mixing(im.knn_from_graph(_knn_matrix(balanced)), labels), 1)
    purity = im.neighbour_purity(knn, batches)
    np.testing.assert_allclose(purity, 1)
    np.testing.assert_allclose(im.neighbour_purity(im.knn_from_graph(_knn_matrix(balanced)), labels), 1 / 3)
    assert np.isnan(im.batch_mixing(knn, np.array(["a"] * 8))).all()


def test_expected_batch_mixing_matches_random_neighbourhoods():
    """The expected score equals the score of kNN neighbourhoods that ignore batch entirely."""
    rng = np.random.default_rng(2)
    n, k = 3000, 15
    batches = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.5, 0.3, 0.2])
    neighbours = [rng.choice(np.delete(np.arange(n), i), k - 1, replace=False) for i in range(n)]
    observed = im.batch_mixing(im.knn_from_graph(_knn_matrix(neighbours)), batches).mean()
    composition = pd.Series(batches).value_counts().to_numpy()
    assert abs(im.expected_batch_mixing(composition, k, 3) - observed) < 0.01
    assert abs(im.expected_batch_mixing([0.5, 0.3, 0.2], k, 3) - observed) < 0.01
    assert im.expected_batch_mixing([100, 0, 0], k, 3) == 0


def test_integration_metrics_table_shape(clustered):
    table = _metrics(clustered)
    n_clusters = clustered.obs["leiden_0.5"].nunique()
    assert len(table) == 2 * (n_clusters + 1)
    assert set(table["graph"]) == {"uncorrected", "harmony"}
    assert (table.groupby("graph")["n_cells"].max() == clustered.n_obs).all()
    assert table["batch_mixing"].between(0, 1).all() and table["cluster_purity"].between(0, 1).all()


def test_scib_metrics_rank_harmony_above_the_planted_batch_effect(clustered):
    """scib-metrics on the planted cohort: batch removal better after Harmony; the published cell
    types, which come from neither graph, stay connected and separated on both."""
    from sccohort.cohort.scib import neighbors_results, scib_table

    info = clustered.uns["cohort"]
    graphs = {
        "uncorrected": clustered.obsp[f"{info['uncorrected_neighbors_key']}_distances"],
        "harmony": clustered.obsp["distances"],
    }
    embeddings = {"uncorrected": clustered.obsm["X_pca"], "harmony": clustered.obsm[info["integrated_rep"]]}
    table = scib_table(
        graphs=graphs,
        embeddings=embeddings,
        batches=clustered.obs["sample"],
        label_sets={"cell_type": clustered.obs["cell_type"]},
        max_cells=2000,
    ).set_index("graph")
    before, after = table.loc["uncorrected"], table.loc["harmony"]
    assert after["scib_ilisi"] > before["scib_ilisi"] + 0.2
    assert after["scib_kbet"] > before["scib_kbet"]
    assert after["scib_graph_connectivity_cell_type"] >= 0.8
    assert after["scib_silhouette_label_cell_type"] >= before["scib_silhouette_label_cell_type"] - 0.1
    assert table.notna().all().all() and ((table >= 0) & (table <= 1)).all().all()
    # the conversion keeps each cell first, then its stored neighbours
    knn = neighbors_results(graphs["harmony"])
    assert (knn.indices[:, 0] == np.arange(clustered.n_obs)).all() and (knn.distances[:, 0] == 0).all()
