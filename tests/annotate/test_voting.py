"""Majority voting and the agreement between methods (sccohort.annotate.voting), through
run_annotation with all three methods."""

from __future__ import annotations

import pytest
from annotate.annotation_data import KEY, MARKERS, REFERENCE
from sccohort.annotate.stage import run_annotation
from sccohort.names import UNKNOWN


def test_run_annotation_with_all_methods_writes_agreement(kang_query, markers, celltypist_model):
    adata = kang_query.copy()
    tables = run_annotation(
        adata,
        markers,
        cluster_key=KEY,
        marker_path=MARKERS,
        celltypist_model=celltypist_model,
        reference=REFERENCE,
        reference_label_key="cell_type",
        n_top_genes=3,
    )
    for column in (
        "cell_type",
        "cell_type_confidence",
        "cell_type_celltypist",
        "cell_type_reference",
        "cell_type_consensus",
        "cell_type_consensus_agreement",
    ):
        assert column in adata.obs
    agreement = tables["agreement"]
    assert list(agreement["cluster"]) == list(tables["clusters"]["cluster"])
    expected = {"markers_label", "markers_support", "celltypist_label", "celltypist_support", "agree"}
    assert expected | {"reference_label", "reference_support", "celltypist_as_markers"} <= set(agreement)
    # Support is the share of the cluster's cells whose own label is the cluster's majority label.
    cells = adata.obs[KEY].astype(str) == agreement["cluster"].iloc[0]
    majority = adata.obs.loc[cells, "cell_type_celltypist_cell"].astype(str).value_counts(normalize=True)
    assert agreement["celltypist_support"].iloc[0] == pytest.approx(majority.iloc[0], abs=1e-4)
    # Both model-based methods use Kang's vocabulary and agree with each other on most cells.
    same = (agreement["celltypist_label"] == agreement["reference_label"]) * agreement["n_cells"]
    assert same.sum() / agreement["n_cells"].sum() >= 0.8
    # Where the marker method assigned a type, the translated labels of the others agree on most cells.
    assigned = agreement["markers_label"] != UNKNOWN
    agreed = agreement.loc[assigned, "agree"] * agreement.loc[assigned, "n_cells"]
    assert agreed.sum() / agreement.loc[assigned, "n_cells"].sum() >= 0.7, agreement
    clusters = tables["clusters"]
    assert (
        clusters["top_markers"].str.count(",").le(2).all() and clusters["top_markers"].str.len().gt(0).all()
    )
