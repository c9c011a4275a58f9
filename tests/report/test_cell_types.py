"""The report's cell-type part when the annotation labels cells one by one: the UMAP by cell type
takes each cell's own label (cell_types.tsv.gz), and the labels of each cluster's cells with
their reasons (cluster_composition.tsv) are shown; without those tables the cluster labels are
used, as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from report.synthetic import Page, number, write_synthetic
from sccohort.report.build import build_report
from sccohort.report.tables import cell_type_per_cell


def test_cell_types_per_cell_and_per_cluster(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    umap = pd.read_csv(inputs.umap, sep="\t")
    clusters = pd.read_csv(inputs.cluster_annotation, sep="\t", dtype={"cluster": str})
    # Cluster 0 (labelled T) holds two types: every other cell of it is an NK cell.
    own = umap["leiden_0.5"].astype(str).map(dict(zip(clusters["cluster"], clusters["label"], strict=True)))
    split = (umap["leiden_0.5"] == 0).to_numpy() & (np.arange(len(umap)) % 2 == 1)
    own[split] = "NK"
    cells = pd.DataFrame({"barcode": umap["barcode"], "cluster": umap["leiden_0.5"], "cell_type": own})
    annotation = tmp_path / "results" / "annotation"
    cells.to_csv(annotation / "cell_types.tsv.gz", sep="\t", index=False)
    counts = cells.groupby(["cluster", "cell_type"]).size().rename("n_cells").reset_index()
    counts = counts.rename(columns={"cell_type": "label"})
    counts["fraction"] = counts["n_cells"] / counts.groupby("cluster")["n_cells"].transform("sum")
    counts["reason"] = "classifier"
    counts.to_csv(annotation / "cluster_composition.tsv", sep="\t", index=False)

    per_cell = cell_type_per_cell(umap, clusters, "leiden_0.5", cells)
    assert (per_cell.to_numpy() == own.to_numpy()).all()
    assert (cell_type_per_cell(umap, clusters, "leiden_0.5") == "NK").sum() == 0

    with_tables = dataclasses.replace(
        inputs,
        cell_types=str(annotation / "cell_types.tsv.gz"),
        cluster_composition=str(annotation / "cluster_composition.tsv"),
    )
    page = Page(
        build_report(with_tables, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    )
    shown = page.frame("cluster-composition")
    assert len(shown) == len(counts)
    nk = shown.loc[(shown["cluster"] == "0") & (shown["label"] == "NK")]
    assert number(nk["n_cells"].iloc[0]) == int(split.sum())
    without = Page(
        build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    )
    assert "cluster-composition" not in without.tables


def test_overview_lists_every_cell_label_with_its_cells(tmp_path):
    """The run overview names the labels of the cells (composition.tsv), also one that is no
    cluster's majority label, with their cell counts."""
    from sccohort.report.data import load
    from sccohort.report.section_summary import cell_type_counts

    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    composition = pd.read_csv(inputs.composition, sep="\t")
    minority = composition.iloc[[0]].assign(cell_type="pDC", n_cells=6)
    pd.concat([composition, minority]).to_csv(inputs.composition, sep="\t", index=False)
    data = load(inputs)
    assert "pDC" not in set(data.clusters["label"].astype(str))
    shown = cell_type_counts(data)
    assert "pDC 6" in shown
    for label, n in composition.groupby("cell_type")["n_cells"].sum().items():
        assert f"{label} {int(n):,}" in shown
