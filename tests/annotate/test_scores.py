"""Marker scores (sccohort.annotate.scores): the whole-cohort formula, negative markers, markers
absent from the data, the statistics among a lineage's cells, and the unit-level rules of the
tree (sccohort.annotate.hierarchy.thresholded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sccohort.annotate.hierarchy import NodeData, TreeSettings, thresholded
from sccohort.annotate.marker_table import read_marker_table
from sccohort.annotate.scores import child_scores, marker_zscores, score_cells, standardise, weighted_score
from sccohort.annotate.tree import ROOT, marker_tree
from sccohort.names import UNKNOWN, score_column


def test_whole_cohort_scores_follow_the_formula(pbmc4k, markers):
    """obs score_<type> (float32, every type of the table) is the weighted mean of the type's
    markers' whole-cohort z-scores, recomputed here for B (all markers in the data)."""
    adata, _ = pbmc4k
    for cell_type in markers["cell_type"].unique():
        assert adata.obs[score_column(cell_type)].dtype == np.float32
    rows = markers.loc[markers["cell_type"] == "B"]
    z, _ = marker_zscores(adata, list(rows["gene"]))
    expected = z @ rows["weight"].to_numpy() / rows.loc[rows["weight"] > 0, "weight"].sum()
    assert np.allclose(adata.obs[score_column("B")], expected, atol=1e-4)


def test_negative_markers_only_penalise_expressing_cells(kang):
    """A negative marker lowers the score of cells that express it, and does nothing for cells
    that do not (their absence of an NK gene is no evidence for a monocyte type)."""
    adata, _ = kang
    base = pd.DataFrame({"cell_type": ["X", "X"], "gene": ["LYZ", "CD14"], "weight": [1.0, 1.0]})
    with_negative = pd.concat([base, pd.DataFrame({"cell_type": ["X"], "gene": ["NKG7"], "weight": [-1.0]})])
    plain, _ = score_cells(adata, base)
    penalised, _ = score_cells(adata, with_negative)
    z, _ = marker_zscores(adata, ["NKG7"])
    expressing = z[:, 0] > 0
    assert np.allclose(plain["X"][~expressing], penalised["X"][~expressing])
    assert np.all(penalised["X"][expressing] < plain["X"][expressing])
    assert np.allclose(plain["X"][expressing] - penalised["X"][expressing], z[expressing, 0] / 2, atol=1e-5)


def test_absent_markers_dilute_a_type_only_below_half_of_its_weight():
    """Whole cohort: a type with half or more of its positive weight in the data scores the mean
    of its informative markers; below that the absent markers dilute it (one gene left of four:
    its z-score over half the type's weight). Among a lineage's cells (present_only) only the
    informative markers count."""
    z = np.array([[1.0, 2.0], [-1.0, -2.0]])
    informative = np.array([True, True])
    index = {"A": 0, "B": 1, "GONE1": 2, "GONE2": 3, "GONE3": 4}
    z = np.hstack([z, np.zeros((2, 3))])
    informative = np.concatenate([informative, [False, False, False]])
    half = pd.DataFrame({"gene": ["A", "GONE1"], "weight": [1.0, 1.0]})
    assert np.allclose(weighted_score(z, informative, index, half, present_only=False), [1.0, -1.0])
    quarter = pd.DataFrame({"gene": ["A", "GONE1", "GONE2", "GONE3"], "weight": [1.0, 1.0, 1.0, 1.0]})
    assert np.allclose(weighted_score(z, informative, index, quarter, present_only=False), [0.5, -0.5])
    assert np.allclose(weighted_score(z, informative, index, quarter, present_only=True), [1.0, -1.0])


def test_lineage_statistics_are_centred_on_the_cohort_and_scaled_on_the_lineage():
    """Among a node's cells a gene is centred on the cohort mean and scaled by its SD among those
    cells: a gene that only varies inside the lineage gets a large z there, and a lineage whose
    cells all lack a marker keeps it below zero (a type absent from the lineage scores low)."""
    cohort = np.array([[0.0], [0.0], [4.0], [4.0], [1.0], [3.0]])
    lineage = cohort[2:]
    z, informative = standardise(lineage, np.array([True]), centre=cohort.mean(axis=0))
    assert informative.all()
    assert np.allclose(z[:, 0], (lineage[:, 0] - 2.0) / lineage[:, 0].std())
    z_absent, _ = standardise(np.array([[0.0], [0.0], [0.1]]), np.array([True]), centre=np.array([2.0]))
    assert (z_absent < 0).all()


def test_genes_shared_by_all_children_count_for_the_parent_only(tmp_path):
    """CD2 listed for both T and NK: it counts at the root (T_NK against the other lineages) but
    not between T and NK; a bare parent (Mono) scores the best of its children."""
    path = tmp_path / "markers.tsv"
    path.write_text(
        "cell_type\tgene\tweight\tparent\n"
        "T\tCD3D\t1\tT_NK\nT\tCD2\t1\tT_NK\nNK\tKLRF1\t1\tT_NK\nNK\tCD2\t1\tT_NK\n"
        "CD14_Mono\tCD14\t1\tMono\nFCGR3A_Mono\tFCGR3A\t1\tMono\n"
    )
    tree = marker_tree(read_marker_table(path))
    assert tree.shared_genes("T_NK") == {"CD2"}
    index = {"CD3D": 0, "CD2": 1, "KLRF1": 2, "CD14": 3, "FCGR3A": 4}
    z = np.array([[0.0, 3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 2.0]])
    informative = np.ones(5, bool)
    inside = child_scores(z, informative, index, tree, "T_NK", present_only=True)
    assert np.allclose(inside[0], [0.0, 0.0])  # CD2 alone says nothing between T and NK
    root = child_scores(z, informative, index, tree, ROOT, present_only=False)
    lineages = list(tree.children[ROOT])
    assert root[0, lineages.index("T_NK")] == pytest.approx(1.5)  # CD2 counts for T (and NK) at the root
    assert root[1, lineages.index("Mono")] == pytest.approx(2.0)  # the best of CD14_Mono and FCGR3A_Mono


def test_unit_rules_margin_parent_and_unknown():
    """At the root a unit is Unknown below min_score or min_margin; below the root a margin under
    min_margin leaves it at the parent (its subtypes do not separate there)."""
    settings = TreeSettings(min_score=0.1, min_margin=0.1)
    graph = sp.csr_matrix((4, 4))
    root = NodeData(ROOT, np.arange(4), ["T_NK", "B"], np.zeros((4, 2)), graph)
    scores = np.array([[1.0, 0.2], [0.05, 0.0], [0.6, 0.55], [-0.2, 0.9]])
    labels, reasons = thresholded(root, scores, settings)
    assert list(labels) == ["T_NK", UNKNOWN, UNKNOWN, "B"]
    assert "min_score" in reasons[1] and "min_margin" in reasons[2]
    t = NodeData("T", np.arange(2), ["CD4_T", "CD8_T"], np.zeros((2, 2)), graph)
    labels, reasons = thresholded(t, np.array([[0.6, 0.55], [0.1, 0.9]]), settings)
    assert list(labels) == ["T", "CD8_T"] and reasons[0].startswith("T:")
