"""Marker scores and cluster labels (sccohort.annotate.scores): accuracy against published labels,
Unknown for cells matching no marker set, the confidence margin, the margin / parent / Unknown
rules and negative markers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from annotate.annotation_data import KANG_MAJOR, KEY, MARKER_MAJOR, SOUPX_MAJOR, major_accuracy
from sccohort.annotate.scores import assign_clusters, marker_zscores, score_cells
from sccohort.names import UNKNOWN, score_column


# --------------------------------------------------------------------------------------------
# Accuracy against published labels
# --------------------------------------------------------------------------------------------
def test_pbmc4k_major_type_accuracy(pbmc4k):
    """SoupX authors' labels of 10x pbmc4k: >= 85% of the labelled PBMC cells get the right major
    type (Unknown counts as wrong; MNP = mononuclear phagocytes, i.e. monocytes or DCs). Most of
    the rest is a cluster the authors call NK that expresses CD3D/CD3E/CD8A and GZMK (effector CD8
    T cells by their markers)."""
    adata, table, _ = pbmc4k
    labelled = adata.obs["published"].isin(SOUPX_MAJOR)
    truth = adata.obs.loc[labelled, "published"].map(SOUPX_MAJOR)
    called = (
        adata.obs.loc[labelled, "cell_type"]
        .astype(str)
        .map(MARKER_MAJOR)
        .replace({"Mono": "Myeloid", "DC": "Myeloid"})
    )
    accuracy = float((truth == called).mean())
    assert accuracy >= 0.85, (accuracy, pd.crosstab(adata.obs["published"], adata.obs["cell_type"]))
    for published in ("T_CD4", "B", "MNP"):
        cells = truth.index[truth == SOUPX_MAJOR[published]]
        assert (called[cells] == truth[cells]).mean() >= 0.95, published
    # Each assigned cluster is backed by its cells: most of them have the cluster's type as their best.
    assigned = table.loc[table["reason"] == "assigned"]
    assert (assigned["cell_agreement"] >= 0.5).all(), assigned


def test_kang_major_type_accuracy(kang):
    """Kang 2018 control cells (published types; shallow 3' v1 data, 9,015 genes): >= 80% get the
    right major type, clustered together with 1,000 IFN-beta-stimulated cells."""
    adata, table, _ = kang
    labelled = adata.obs["published"].notna()
    accuracy = major_accuracy(
        adata.obs.loc[labelled, "published"], adata.obs.loc[labelled, "cell_type"], KANG_MAJOR
    )
    assert accuracy >= 0.80, (accuracy, pd.crosstab(adata.obs["published"], adata.obs["cell_type"]))
    # B cells, CD14 monocytes and NK cells are unambiguous: >= 90% each at the exact type.
    exact = {"B cells": "B", "CD14+ Monocytes": "CD14_Mono", "NK cells": "NK"}
    for published, label in exact.items():
        cells = adata.obs["published"] == published
        share = float((adata.obs.loc[cells, "cell_type"] == label).mean())
        assert share >= 0.9, (published, share)


def test_cells_matching_no_marker_set_are_unknown(pbmc4k):
    """Three lung adenocarcinoma cell lines planted among PBMC form their own clusters; every such
    cluster is Unknown (its best score is below min_score), while no PBMC cluster is."""
    adata, table, _ = pbmc4k
    lines = adata.obs["source"] != "pbmc4k"
    share_lines = lines.groupby(adata.obs[KEY], observed=True).mean()
    line_clusters = set(share_lines.index[share_lines >= 0.9].astype(str))
    assert line_clusters, "the cell lines did not form their own clusters"
    by_cluster = table.set_index("cluster")
    assert (by_cluster.loc[sorted(line_clusters), "label"] == UNKNOWN).all(), by_cluster
    assert by_cluster.loc[sorted(line_clusters), "reason"].str.contains("min_score").all()
    assert (adata.obs.loc[lines, "cell_type"] == UNKNOWN).mean() >= 0.95
    pbmc_clusters = set(share_lines.index[share_lines < 0.1].astype(str))
    assert (by_cluster.loc[sorted(pbmc_clusters), "label"] != UNKNOWN).all(), by_cluster


def test_outputs_in_obs_and_confidence_is_cluster_margin(pbmc4k, markers):
    adata, table, _ = pbmc4k
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    for cell_type in markers["cell_type"].unique():
        assert adata.obs[score_column(cell_type)].dtype == np.float32
    # The cluster score is the mean of its cells' scores; the confidence is the cluster margin.
    cells = adata.obs[KEY].astype(str) == table["cluster"].iloc[0]
    best = table["best_type"].iloc[0]
    assert adata.obs.loc[cells, score_column(best)].mean() == pytest.approx(table["score"].iloc[0], abs=1e-5)
    assert np.allclose(adata.obs.loc[cells, "cell_type_confidence"], table["margin"].iloc[0], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Scoring and assignment rules
# --------------------------------------------------------------------------------------------
def test_margin_parent_and_unknown_rules():
    """assign_clusters on score tables with a known answer: a clear winner, a tie between two
    children of one parent (-> parent), a tie across parents (-> Unknown), and a low best score."""
    clusters = pd.Series(np.repeat(["0", "1", "2", "3"], 5))
    rows = {
        "0": {"CD4_T": 1.0, "CD8_T": 0.2, "NK": 0.1},
        "1": {"CD4_T": 0.60, "CD8_T": 0.55, "NK": 0.1},
        "2": {"CD4_T": 0.1, "CD8_T": 0.55, "NK": 0.50},
        "3": {"CD4_T": 0.05, "CD8_T": 0.0, "NK": -0.3},
    }
    scores = pd.DataFrame([rows[c] for c in clusters], index=[f"c{i}" for i in range(20)])
    parents = {"CD4_T": "T", "CD8_T": "T"}
    table = assign_clusters(
        scores, clusters.set_axis(scores.index), min_margin=0.1, min_score=0.1, parents=parents
    ).set_index("cluster")
    assert table.loc["0", "label"] == "CD4_T"
    assert table.loc["0", "margin"] == pytest.approx(0.8)
    assert table.loc["1", "label"] == "T"
    assert table.loc["2", "label"] == UNKNOWN
    assert table.loc["3", "label"] == UNKNOWN and "min_score" in table.loc["3", "reason"]
    # Without parents the tie in cluster 1 is Unknown too.
    table = assign_clusters(scores, clusters.set_axis(scores.index), min_margin=0.1, min_score=0.1).set_index(
        "cluster"
    )
    assert table.loc["1", "label"] == UNKNOWN


def test_negative_markers_only_penalise_expressing_cells(kang):
    """A negative marker lowers the score of cells that express it, and does nothing for cells
    that do not (their absence of an NK gene is no evidence for a monocyte type)."""
    adata, _, _ = kang
    base = pd.DataFrame({"cell_type": ["X", "X"], "gene": ["LYZ", "CD14"], "weight": [1.0, 1.0]})
    with_negative = pd.concat([base, pd.DataFrame({"cell_type": ["X"], "gene": ["NKG7"], "weight": [-1.0]})])
    plain, _ = score_cells(adata, base)
    penalised, _ = score_cells(adata, with_negative)
    z, _ = marker_zscores(adata, ["NKG7"])
    expressing = z[:, 0] > 0
    assert np.allclose(plain["X"][~expressing], penalised["X"][~expressing])
    assert np.all(penalised["X"][expressing] < plain["X"][expressing])
    assert np.allclose(plain["X"][expressing] - penalised["X"][expressing], z[expressing, 0] / 2, atol=1e-5)
