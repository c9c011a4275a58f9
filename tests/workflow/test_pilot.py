"""A one-sample pilot with unusual but legal names runs end to end and its report says what was
skipped and why; a second Snakemake started in the same folder while it runs is refused without
harming it (issue 19). The run is conftest.pilot_run (helpers.make_pilot_project, run_pilot),
shared with the report's browser test of hostile names.
"""

from __future__ import annotations

import html
import json
import re

import pandas as pd
import pytest
from helpers import (
    PILOT_BATCH,
    PILOT_CELL_TYPE_DOLLAR,
    PILOT_DONOR,
    PILOT_SAMPLE,
    make_pilot_project,
    pilot_names,
    run_workflow,
)


def read_text_table(path, **options) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str, **options)


def test_pilot_plans_no_uncorrected_embedding(tmp_path):
    """One batch: Harmony cannot run, so the uncorrected graph and UMAP (cohort_uncorrected, the
    same as the clustering's then) are not planned."""
    result = run_workflow(make_pilot_project(tmp_path / "pilot", n_cells=60), "-n")
    jobs = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.MULTILINE))
    assert {
        "cohort_cluster",
        "cohort_diagnostics",
        "report_html",
    } <= jobs and "cohort_uncorrected" not in jobs


@pytest.mark.slow
def test_second_snakemake_in_the_same_folder_is_refused_and_harms_nothing(pilot_run):
    second = json.loads((pilot_run / "second_snakemake.json").read_text())
    assert second["overlapped"], "the pilot finished before the second snakemake was refused or not"
    output = second["output"]
    assert second["returncode"] != 0, output[-3000:]
    # Snakemake's own lock message: what is wrong, and what to do if no other run is active
    assert "Directory cannot be locked" in output and "--unlock" in output, output[-3000:]
    assert "Job stats" not in output  # refused before it planned (or ran) anything
    assert not [p for p in pilot_run.rglob("*.partial") if ".snakemake" not in p.parts]
    # the first run finished (run_pilot asserts it) with every output of rule all
    assert (pilot_run / "results" / "report.html").is_file()


@pytest.mark.slow
def test_one_sample_pilot_report_says_what_was_skipped_and_why(pilot_run):
    results = pilot_run / "results"
    text = (results / "report.html").read_text()
    assert (
        "No integration (harmony was skipped: every batch key (cohort.batch_keys: sample) has a single level"
        in text
    )
    assert "Differential expression was not run: no contrast is configured" in text
    assert not (results / "de").exists() and not (results / "cohort" / "uncorrected.h5ad").exists()
    metrics = read_text_table(results / "cohort" / "integration_metrics.tsv")
    assert set(metrics["graph"]) == {"uncorrected"}


@pytest.mark.slow
def test_pilot_names_stay_as_written(pilot_run):
    results, condition = pilot_run / "results", pilot_names()["condition"]
    umap = read_text_table(results / "cohort" / "umap_coords.tsv.gz")
    assert set(umap["sample"]) == {PILOT_SAMPLE} and set(umap["condition"]) == {condition}
    assert set(umap["donor"]) == {PILOT_DONOR} and set(umap["batch"]) == {PILOT_BATCH}
    text = (results / "report.html").read_text()
    assert html.escape(condition) in text and f">{PILOT_SAMPLE}<" in text
    mqc = read_text_table(results / "multiqc" / "sccohort_qc_mqc.tsv", comment="#")
    assert list(mqc.iloc[:, 0]) == [PILOT_SAMPLE]
    labels = set(read_text_table(results / "annotation" / "cluster_annotation.tsv")["label"])
    assert PILOT_CELL_TYPE_DOLLAR in labels, labels  # CD4 T cells: the largest PBMC population
    assert html.escape(PILOT_CELL_TYPE_DOLLAR) in text
    # the figures with these labels (mathtext matplotlib cannot parse) were drawn
    for figure in ("umap_condition.png", "umap_batch.png", "marker_dotplot.png"):
        assert (results / "cohort" / "figures" / figure).stat().st_size > 10_000
    for figure in ("umap_cell_type.png", "marker_dotplot.png", "composition.png"):
        assert (results / "annotation" / "figures" / figure).stat().st_size > 10_000
