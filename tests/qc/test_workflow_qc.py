"""End to end: the per-sample contract of the shared `full_run` (rule all, which holds every
`snakemake qc` output), what `snakemake qc` plans (a dry run: the per-sample jobs, nothing
downstream), and a sheet override applied by a real run of one sample's QC."""

from __future__ import annotations

import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import SMALL_SAMPLES, make_project, run_workflow
from sccohort.qc.load import read_sample

PER_SAMPLE_RULES = ("load_sample", "qc_sample", "doublets_sample", "qc_report_sample")


@pytest.fixture(scope="module")
def override_run(tmp_path_factory):
    """One sample's QC (its thresholds.json and what it needs) with a sheet override of max_pct_mt."""
    project = make_project(
        tmp_path_factory.mktemp("qc_override"),
        samples=SMALL_SAMPLES[:1],
        n_cells=400,
        config_overrides={"de": {"contrasts": []}},  # one sample: no contrast has replicates
    )
    sheet = pd.read_csv(project / "config" / "samples.tsv", sep="\t")
    sheet["max_pct_mt"] = 8
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    run_workflow(project, f"results/qc/{SMALL_SAMPLES[0]}/cells.tsv.gz")
    return project


def test_qc_target_plans_every_sample_and_nothing_downstream(project_factory):
    project = project_factory("qc_dag", n_cells=60)
    result = run_workflow(project, "-n", "qc")
    stats = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", result.stdout + result.stderr, re.S)
    jobs = {name: int(n) for name, n in (line.split() for line in stats.group(1).splitlines())}
    assert jobs == {**{rule: len(SMALL_SAMPLES) for rule in PER_SAMPLE_RULES}, "qc_summary": 1, "qc": 1}


@pytest.mark.slow
def test_qc_outputs_of_every_sample_complete(full_run):
    project = full_run
    for sample in SMALL_SAMPLES:
        for name in ("cells.tsv.gz", "filtered.h5ad", "thresholds.json", "report.html"):
            assert (project / "results" / "qc" / sample / name).is_file(), f"{sample}/{name}"
    assert not list((project / "results").rglob("*.partial"))
    # the cross-sample summary: every sample side by side, its counts those of thresholds.json
    summary = pd.read_csv(project / "results" / "qc" / "summary.tsv", sep="\t").set_index("sample")
    assert list(summary.index) == list(SMALL_SAMPLES)
    for sample in SMALL_SAMPLES:
        status = json.loads((project / "results" / "qc" / sample / "thresholds.json").read_text())["status"]
        assert summary.loc[sample, "kept"] == status["n_cells_kept"]
        assert summary.loc[sample, "cells_in"] == status["n_cells_input"]
    page = (project / "results" / "qc" / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and all(
        f'href="{s}/report.html"' in page for s in SMALL_SAMPLES
    )


@pytest.mark.slow
@pytest.mark.parametrize("sample", SMALL_SAMPLES)
def test_cells_table_and_filtered_object_agree(full_run, sample):
    project = full_run
    folder = project / "results" / "qc" / sample
    cells = pd.read_csv(folder / "cells.tsv.gz", sep="\t")
    raw = read_sample(project / "data" / sample)
    # Every input barcode, once.
    assert sorted(cells["barcode"]) == sorted(raw.obs_names)
    kept = ad.read_h5ad(folder / "filtered.h5ad")
    assert set(kept.obs_names) == set(cells.loc[cells["pass"], "barcode"])
    assert (cells.loc[~cells["pass"], "fail_reason"].str.len() > 0).all()
    assert (cells.loc[cells["pass"], "fail_reason"].fillna("") == "").all()
    # Raw integer counts, unchanged from the input.
    np.testing.assert_array_equal(kept.X.toarray(), raw[kept.obs_names].X.toarray())
    for column in (
        "sample",
        "condition",
        "donor",
        "batch",
        "total_counts",
        "n_genes_by_counts",
        "pct_counts_mt",
        "pct_counts_ribo",
        "pct_counts_hb",
        "pct_counts_in_top_20_genes",
        "doublet_score",
        "predicted_doublet",
    ):
        assert column in kept.obs, column
    assert (kept.obs["sample"] == sample).all()
    assert not kept.obs["predicted_doublet"].any()  # action: remove
    thresholds = json.loads((folder / "thresholds.json").read_text())
    low = thresholds["qc"]["total_counts"]["lower"]
    assert (kept.obs["total_counts"] >= low).all()
    failed_low = cells["fail_reason"].fillna("").str.contains("low_counts")
    assert (cells.loc[failed_low, "total_counts"] < low).all()
    assert thresholds["doublets"]["threshold_source"]


@pytest.mark.slow
def test_sheet_override_applied(override_run):
    project = override_run
    first = SMALL_SAMPLES[0]
    thresholds = json.loads((project / "results" / "qc" / first / "thresholds.json").read_text())
    mt = thresholds["qc"]["pct_counts_mt"]
    assert mt["upper"] <= 8
    if mt["upper"] == 8:
        assert mt["upper_source"] == "sample sheet column max_pct_mt"
    cells = pd.read_csv(project / "results" / "qc" / first / "cells.tsv.gz", sep="\t")
    assert cells.loc[cells["pass"], "pct_counts_mt"].max() <= 8


@pytest.mark.slow
def test_report_page_is_self_contained(full_run):
    project = full_run
    page = (project / "results" / "qc" / SMALL_SAMPLES[0] / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for text in ("Thresholds applied", "Scrublet", "cells kept", SMALL_SAMPLES[0]):
        assert text in page


@pytest.mark.slow
def test_benchmarks_and_logs_written(full_run):
    project = full_run
    for rule in ("load_sample", "qc_sample", "doublets_sample", "qc_report_sample"):
        bench = pd.read_csv(project / "benchmarks" / "qc" / SMALL_SAMPLES[0] / f"{rule}.tsv", sep="\t")
        assert bench["max_rss"].iloc[0] > 0
        assert (project / "logs" / "qc" / SMALL_SAMPLES[0] / f"{rule}.log").stat().st_size > 0
