"""What Snakemake plans after a change to a finished project (issue 19): adding a sample redoes that
sample's per-sample jobs and the cohort-level jobs, never another sample's; adding a contrast
redoes DE and the report only.

Each test copies the finished `full_run` project with its Snakemake metadata and file times
(`.snakemake/metadata` records each job's params, input and code, which Snakemake 9's default
rerun triggers compare: mtime, params, input, software-env, code), changes it the way a user
would, and reads the jobs a dry run (`snakemake -n`) plans.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import EXAMPLE_CONDITIONS, finished_copy, run_workflow, subsample_example, write_10x_mtx

PER_SAMPLE_RULES = {"load_sample", "qc_sample", "doublets_sample", "qc_report_sample"}
COHORT_RULES = {
    "cohort_merge",
    "cohort_cluster",
    "cohort_uncorrected",
    "cohort_diagnostics",
    "cohort_markers",
    "annotate_cells",
    "annotation_figures",
    "de_pseudobulk",
    "de_contrast",
    "de_summary",
    "composition_test",
    "qc_summary",
    "export_cellxgene",
    "export_cellbrowser",
    "report_html",
    "multiqc_content",
    "all",
}
JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", re.MULTILINE)


def planned_jobs(project: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job `snakemake -n` plans in `project`."""
    result = run_workflow(project, "-n")
    jobs = []
    for match in JOB.finditer(result.stdout + result.stderr):
        wildcards = re.search(r"^\s+wildcards: (.*)$", match.group(2), re.MULTILINE)
        pairs = dict(p.split("=", 1) for p in wildcards.group(1).split(", ")) if wildcards else {}
        jobs.append((match.group(1), pairs))
    return jobs


@pytest.fixture
def finished(full_run, tmp_path):
    project = finished_copy(full_run, tmp_path / "project")
    assert planned_jobs(project) == [], "the copied finished project is not up to date"
    return project


@pytest.mark.slow
def test_adding_a_sample_redoes_its_own_jobs_and_the_cohort_jobs_only(finished):
    project, new = finished, "nCoV_PBMC_15"
    write_10x_mtx(subsample_example(new, 400, seed=9), project / "data" / new)
    sheet = pd.read_csv(project / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = {"sample": new, "path": f"data/{new}", "condition": EXAMPLE_CONDITIONS[new], "donor": "donor_15"}
    sheet = pd.concat([sheet, pd.DataFrame([{**row, "batch": new}])], ignore_index=True)
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)

    jobs = planned_jobs(project)
    per_sample = {(rule, w["sample"]) for rule, w in jobs if rule in PER_SAMPLE_RULES}
    assert per_sample == {(rule, new) for rule in PER_SAMPLE_RULES}, f"per-sample jobs planned: {per_sample}"
    cohort = {rule for rule, _ in jobs if rule not in PER_SAMPLE_RULES}
    assert cohort <= COHORT_RULES and {"cohort_merge", "report_html", "multiqc_content"} <= cohort, cohort


@pytest.mark.slow
def test_adding_a_contrast_redoes_de_and_the_report_only(finished):
    project = finished
    path = project / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["de"]["contrasts"].append(
        {"name": "Normal_vs_COVID19", "factor": "condition", "test": "Normal", "reference": "COVID19"}
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    jobs = planned_jobs(project)
    assert sorted(rule for rule, _ in jobs) == [
        "all",
        "composition_test",
        "de_contrast",
        "de_summary",
        "report_html",
    ], jobs
    # the contrast that was there is not tested again, neither its DE nor its composition test
    for rule in ("de_contrast", "composition_test"):
        assert [w for r, w in jobs if r == rule] == [{"contrast": "Normal_vs_COVID19"}], jobs
