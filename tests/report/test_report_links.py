"""What the report shows beside each table and DE group: links to the files, the DE stage's MA
plots and heat maps, the DE caveats, the QC stage's warnings, the columns explained, cell types on
the cluster-size chart."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from report.synthetic import Page, write_png, write_synthetic
from sccohort.report.build import build_report

QC_WARNING = "qc.min_counts (200) removes 46% of cells; sample median 508 counts: lower qc.min_counts"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A synthetic report whose T group calls PPBP with 2 vs 2 pseudobulk samples, whose DE stage
    wrote MA plots and heat maps, and whose sample S1 carries a QC-stage warning."""
    root = tmp_path_factory.mktemp("report_links")
    inputs, config, sheet = write_synthetic(root, cell_types=("T", "B", "Unknown"))
    folder = Path(inputs.de_dirs["stim_vs_ctrl"])
    table = pd.read_csv(folder / "T.tsv", sep="\t")
    table.loc[table["padj"].idxmin(), "gene"] = "PPBP"
    table.loc[table["padj"].idxmin(), "log2FoldChange"] = 4.0
    table.to_csv(folder / "T.tsv", sep="\t", index=False)
    for group_file in ("T", "group_2"):
        for kind in ("ma", "heatmap"):
            write_png(folder / "figures" / f"{group_file}.{kind}.png", f"{kind} {group_file}")
    summary = pd.read_csv(inputs.de_summary, sep="\t")
    summary["samples_test"], summary["samples_reference"] = "S3,S4", "S1,S2"
    summary.to_csv(inputs.de_summary, sep="\t", index=False)
    metadata = pd.DataFrame(
        [
            (f"{s}__{g}", s, g, g, 50, c)
            for g in ("T", "group_2")
            for s, c in zip(("S1", "S2", "S3", "S4"), sheet["condition"], strict=True)
        ],
        columns=["pseudobulk", "sample", "group", "group_file", "n_cells", "condition"],
    )
    (root / "results" / "de" / "pseudobulk").mkdir(parents=True)
    metadata.to_csv(root / "results" / "de" / "pseudobulk" / "metadata.tsv", sep="\t", index=False)
    inputs.de_metadata = str(root / "results" / "de" / "pseudobulk" / "metadata.tsv")
    thresholds = json.loads(Path(inputs.thresholds["S1"]).read_text())
    thresholds["warnings"] = [{"message": QC_WARNING, "option": "qc.min_counts"}]
    Path(inputs.thresholds["S1"]).write_text(json.dumps(thresholds))
    (root / "results" / "qc" / "summary.html").write_text("<html></html>")
    (root / "results" / "qc" / "summary.tsv").write_text("sample\n")
    inputs.qc_summary = str(root / "results" / "qc" / "summary.html")
    clusters = pd.read_csv(inputs.cluster_annotation, sep="\t", dtype=str)
    clusters.assign(cell_agreement=0.9).to_csv(inputs.cluster_annotation, sep="\t", index=False)
    text = build_report(inputs, config, sheet=sheet, report_path=root / "results" / "report.html")
    return root, text


def test_every_link_is_relative_and_resolves(report):
    root, text = report
    page = Page(text)
    links = [a["href"] for tag, a in page.tags if tag == "a" and not a.get("href", "#").startswith("#")]
    assert not [h for h in links if h.startswith(("/", "file:", "http"))]
    assert not [h for h in links if not (root / "results" / unquote(h)).is_file()]
    for expected in (
        "qc/summary.html",
        "qc/summary.tsv",
        "qc/S1/cells.tsv.gz",
        "qc/S1/thresholds.json",
        "de/summary.tsv",
        "de/pseudobulk/metadata.tsv",
        "de/stim_vs_ctrl/T.tsv",
        "de/stim_vs_ctrl/figures/T.ma.png",
        "de/stim_vs_ctrl/figures/all_groups.lfc_heatmap.png",
        "annotation/cluster_annotation.tsv",
        "cohort/integration_metrics.tsv",
    ):
        assert expected in links, expected


def test_de_groups_show_ma_plots_heat_maps_and_their_caveats(report):
    _, text = report
    assert text.count('alt="MA plot') == 2 and text.count('alt="heat map of top genes') == 2
    group_t = text[text.index("<summary>T: ") : text.index("<summary>B: ")]
    assert "(2 warnings)" in group_t
    assert "PPBP up among the calls: genes of platelets" in group_t
    assert "leave 2 residual degrees of freedom (fewer than 3)" in group_t
    summary = text[text.index('id="summary"') : text.index('id="qc"')]
    assert "DE stim_vs_ctrl / T: PPBP up among the calls" in summary  # also in the run summary


def test_qc_stage_warnings_are_shown(report):
    _, text = report
    summary = text[text.index('id="summary"') : text.index('id="qc"')]
    qc = text[text.index('id="qc"') : text.index('id="integration"')]
    assert f"Sample S1: {QC_WARNING}" in summary and f"Sample S1: {QC_WARNING}" in qc


def test_columns_are_explained_where_they_appear(report):
    _, text = report
    clustering = text[text.index('id="clustering"') : text.index('id="de"')]
    assert (
        "<td>cell_agreement</td><td>share of the cells whose own label (smoothed scores) agrees" in clustering
    )
    de = text[text.index('id="de"') :]
    assert "<td>padj</td>" in de and "<td>samples (test / ref.)</td>" in de
