"""The report's sections as a whole page (sccohort.report.build and section_*): self-contained,
user strings escaped, the tables holding the inputs' numbers, optional inputs degrading to notes."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report.synthetic import (
    HOSTILE_CONDITION,
    HOSTILE_GENE,
    HOSTILE_TYPE,
    SECTIONS,
    Page,
    number,
    write_synthetic,
)
from sccohort import pages
from sccohort.errors import InputError
from sccohort.report.build import build_report


def test_report_is_self_contained_and_escapes_user_strings(synthetic):
    root, inputs, _, _, text = synthetic
    page = Page(text)
    # One script (the table script, which holds no data), no external resource of any kind.
    assert page.scripts == [pages.render("table.js")]
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        if tag in ("link", "iframe", "object", "embed", "base"):
            raise AssertionError(f"unexpected <{tag}>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text, re.I)
    assert "url(" not in text and "@import" not in text
    # Hostile names appear, escaped, where they belong.
    for hostile in (HOSTILE_CONDITION, HOSTILE_TYPE, HOSTILE_GENE, "<evil>"):
        assert hostile not in text
        assert html.escape(hostile) in text
    assert "stim_vs_ctrl" in text
    # Sections and navigation.
    ids = {attrs.get("id") for tag, attrs in page.tags if tag == "section"}
    assert ids == set(SECTIONS)
    nav = [attrs["href"] for tag, attrs in page.tags if tag == "a" and attrs.get("href", "").startswith("#")]
    assert nav[: len(SECTIONS)] == [f"#{s}" for s in SECTIONS]
    # Links to the per-sample QC pages are relative to the report and resolve, like every link
    # to a file (tables, figures) of the results folder.
    qc_table = page.frame("qc-table")
    assert list(qc_table["QC page"]) == ["open"] * len(inputs.thresholds)
    links = [
        attrs["href"] for tag, attrs in page.tags if tag == "a" and not attrs.get("href", "#").startswith("#")
    ]
    for sample in inputs.thresholds:
        assert f"qc/{sample}/report.html" in links
    for link in links:
        assert (root / "results" / link).is_file(), link


def test_report_tables_hold_the_inputs_numbers(synthetic):
    _, inputs, config, _, text = synthetic
    page = Page(text)
    steps = page.frame("cells-per-step").set_index("sample")
    qc = page.frame("qc-table").set_index("sample")
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        assert number(steps.loc[sample, "cells in"]) == len(cells)
        assert number(steps.loc[sample, "after doublet removal"]) == cells["pass"].sum()
        assert number(qc.loc[sample, "high % mito"]) == (cells["pct_counts_mt"] > 20).sum()
        assert number(qc.loc[sample, "median genes"]) == round(
            cells.loc[cells["pass"], "n_genes_by_counts"].median()
        )
    assert qc.loc["S1", "condition"] == "ctrl" and qc.loc["S3", "condition"] == HOSTILE_CONDITION
    # DE: one searchable table per tested group with the top_genes genes by adjusted p-value.
    de_tables = [t for t in page.tables if t.startswith("de-stim_vs_ctrl-")]
    assert len(de_tables) == 2
    for table_id, group_file in zip(sorted(de_tables), ("T", "group_2"), strict=True):
        shown = page.frame(table_id)
        full = pd.read_csv(Path(inputs.de_dirs["stim_vs_ctrl"]) / f"{group_file}.tsv", sep="\t")
        assert len(shown) == config["report"]["top_genes"]
        padj = full.set_index("gene")["padj"]
        shown_padj = padj[shown["gene"]].to_numpy()
        assert (np.diff(shown_padj) >= 0).all()  # sorted by adjusted p-value
        assert shown_padj.max() <= padj.drop(shown["gene"]).min()  # and no better gene left out
    summary = page.frame("de-summary")
    assert set(summary["status"]) == {"tested", "skipped"}
    # each skipped group's reason once, under Skipped groups; the run summary has one line for all
    assert text.count("DE stim_vs_ctrl / Unknown: skipped: excluded by de.exclude_groups") == 1
    assert "DE: 1 group(s) not tested (stim_vs_ctrl / Unknown); the reasons are under" in text


def test_report_degrades_without_optional_inputs_and_warns(tmp_path):
    """No DE, no method agreement, no stage figures, a dropped sample, a sample without doublet
    calling: the report is still whole and says so."""
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    info = json.loads(Path(inputs.thresholds["S2"]).read_text())
    info["status"]["dropped"] = True
    info["status"]["warning"] = "Sample 'S2': only 12 of 400 cells pass QC; dropped from the cohort."
    Path(inputs.thresholds["S2"]).write_text(json.dumps(info))
    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    page = Page(text)
    assert {attrs.get("id") for tag, attrs in page.tags if tag == "section"} == set(SECTIONS)
    assert "Differential expression was not run: no contrast is configured" in text
    assert "Only the marker-based annotation ran" in text
    assert "Dot plot by cell type not available." in text
    assert "only 12 of 400 cells pass QC; dropped from the cohort." in text
    assert "Sample S3: doublet calling skipped: only 150 cells pass QC" in text
    status = page.frame("cells-per-step").set_index("sample")["status"]
    assert status["S2"].startswith("dropped") and status["S3"] == "doublet calling skipped"
    assert status["S1"] == "ok"


def test_missing_required_input_fails_naming_it(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    Path(inputs.integration_metrics).unlink()
    with pytest.raises(InputError, match="integration_metrics.*integration_metrics.tsv"):
        build_report(inputs, config, sheet=sheet)


def test_big_cohorts_are_subsampled_to_max_points(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False, n_cells=1500)
    n_cells = len(pd.read_csv(inputs.umap, sep="\t"))
    config["report"]["max_points"] = 1000
    text = build_report(inputs, config, sheet=sheet)
    assert f"Drawn on a random subsample of 1,000 of {n_cells:,} cells (seed 0)" in text


def test_small_cohorts_are_drawn_whole(synthetic):
    _, inputs, config, _, text = synthetic
    assert len(pd.read_csv(inputs.umap, sep="\t")) < config["report"]["max_points"]
    assert "Drawn on a random subsample" not in text


def test_de_groups_show_the_de_stages_volcano_plots(synthetic, tmp_path):
    """The volcano beside each group's top genes is the DE stage's PNG, inlined as it is; an
    absent one leaves a note."""
    _, inputs, _, _, text = synthetic
    figures = Path(inputs.de_dirs["stim_vs_ctrl"]) / "figures"
    for group_file in ("T", "group_2"):
        encoded = base64.b64encode((figures / f"{group_file}.volcano.png").read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{encoded}"' in text
    assert text.count('alt="volcano plot') == 2
    assert 'alt="log2 fold-change heat map"' in text
    inputs, config, sheet = write_synthetic(tmp_path)
    figures = Path(inputs.de_dirs["stim_vs_ctrl"]) / "figures"
    (figures / "group_2.volcano.png").unlink()
    (figures / "all_groups.lfc_heatmap.png").unlink()
    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    assert text.count('alt="volcano plot') == 1
    assert "Volcano plot of B not available: figures/group_2.volcano.png not found." in text
    assert "log2 fold-change heat map" not in text
    assert len([t for t in Page(text).tables if t.startswith("de-stim_vs_ctrl-")]) == 2


def test_summary_links_to_the_cell_browser_and_the_cellxgene_export(synthetic):
    """Links to the exports the run wrote (the rule takes them as inputs), relative to report.html
    in the results folder; none to an export that is off or absent (a link must resolve)."""
    root, inputs, config, sheet, text = synthetic
    assert "cellbrowser/index.html" not in text  # the synthetic results hold no export

    def build(name, cfg):
        return build_report(
            inputs,
            cfg,
            sheet=sheet,
            versions={"scanpy": "1.11.5"},
            checksum_paths={},
            report_path=root / "results" / name,
        )

    (root / "results" / "cellbrowser").mkdir(exist_ok=True)
    (root / "results" / "cellbrowser" / "index.html").write_text("<html></html>")
    (root / "results" / "export").mkdir(exist_ok=True)
    (root / "results" / "export" / "cellxgene.h5ad").write_bytes(b"")
    try:
        hrefs = [attrs.get("href") for tag, attrs in Page(build("report_on.html", config)).tags if tag == "a"]
        assert "cellbrowser/index.html" in hrefs and "export/cellxgene.h5ad" in hrefs
        text_off = build("report_off.html", {**config, "export": {"cellbrowser": False, "cellxgene": False}})
        assert "cellbrowser/index.html" not in text_off and "export/cellxgene.h5ad" not in text_off
    finally:  # the fixture is shared: other tests check that every link of its report resolves
        (root / "results" / "cellbrowser" / "index.html").unlink()
        (root / "results" / "export" / "cellxgene.h5ad").unlink()


def test_integration_section_shows_the_scib_metrics_per_graph(synthetic):
    _, _, _, _, text = synthetic
    tables = Page(text).tables
    scib = tables["integration-scib"]
    assert scib[0] == ["metric", "uncorrected", "harmony"]
    rows = {row[0]: row[1:] for row in scib[1:]}
    assert rows["ilisi"] == ["0.05", "0.3"] and rows["graph_connectivity_leiden_uncorrected"] == [
        "0.8",
        "0.8",
    ]
    # the per-cluster and overall diagnostics tables keep their columns, without the scib ones
    assert not any(cell.startswith("scib_") for cell in tables["integration-overall"][0])
    assert not any(cell.startswith("scib_") for cell in tables["integration-clusters"][0])
