"""sccohort used as a Snakemake module from another project's Snakefile.

The outer Snakefile (below, also in docs/deployment.md) imports every rule with a prefix; the
module reads the outer project's config, and paths in it stay relative to the outer project.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

from helpers import copy_project, workflow_env  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

OUTER_SNAKEFILE = """\
# An analysis project that uses sccohort as a module.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


module sccohort:
    # or: github("<org>/sccohort", path="Snakefile", tag="v0.1.0")
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from sccohort as sccohort_*


rule all:
    input:
        rules.sccohort_all.input,
    default_target: True
"""


def write_outer_snakefile(project: Path) -> Path:
    path = project / "Snakefile"
    path.write_text(OUTER_SNAKEFILE.format(snakefile=REPO / "Snakefile"))
    return path


def _snakemake(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--workflow-profile", "none", "--cores", "2", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=workflow_env(),  # hash seed and the suite's shared numba cache
    )


def _job_stats(text: str) -> dict[str, int]:
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    assert match, f"no job stats in:\n{text[-3000:]}"
    return {name: int(count) for name, count in (line.split() for line in match.group(1).splitlines())}


@pytest.fixture
def outer_project(tmp_path) -> Path:
    """An outer project: the repository's config and the bundled example samples (absolute paths)."""
    project = tmp_path / "analysis"
    (project / "config").mkdir(parents=True)
    sheet = pd.read_csv(REPO / "config" / "samples.tsv", sep="\t", dtype=str)
    sheet["path"] = [str(REPO / p) for p in sheet["path"]]
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples"] = "config/samples.tsv"
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_outer_snakefile(project)
    return project


def test_module_dry_run_plans_the_same_jobs_as_the_workflow(outer_project):
    as_module = _snakemake(outer_project, "-n")
    assert as_module.returncode == 0, as_module.stderr[-4000:] + as_module.stdout[-4000:]
    direct = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--workflow-profile", "none", "--cores", "2", "-n"],
        cwd=outer_project,
        capture_output=True,
        text=True,
    )
    assert direct.returncode == 0, direct.stderr[-4000:]
    module_jobs = _job_stats(as_module.stdout + as_module.stderr)
    direct_jobs = _job_stats(direct.stdout + direct.stderr)
    # every rule arrives with the prefix, with the same number of jobs (the outer `all` replaces the module's)
    expected = {f"sccohort_{rule}": n for rule, n in direct_jobs.items() if rule != "all"}
    assert {rule: n for rule, n in module_jobs.items() if rule != "all"} == expected
    assert module_jobs["all"] == 1 and sum(expected.values()) > len(expected)


def test_module_dry_run_fails_on_a_bad_outer_config(outer_project):
    """The module validates the config the outer project passes in (same checks as standalone)."""
    config = yaml.safe_load((outer_project / "config" / "config.yaml").read_text())
    config["qc"]["no_such_option"] = 1
    (outer_project / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(outer_project, "-n")
    assert result.returncode != 0
    assert "no_such_option" in result.stdout + result.stderr


@pytest.mark.slow
def test_module_runs_qc_like_the_workflow(full_run, tmp_path):
    """A real run through the module reproduces the standalone run's per-sample QC tables."""
    project = copy_project(full_run, tmp_path / "analysis")
    write_outer_snakefile(project)
    sample = pd.read_csv(project / "config" / "samples.tsv", sep="\t")["sample"].iloc[0]
    targets = [f"results/qc/{sample}/cells.tsv.gz", f"results/qc/{sample}/thresholds.json"]
    result = _snakemake(project, *targets)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "sccohort_load_sample" in result.stderr + result.stdout
    for target in targets:
        assert (project / target).is_file()
    pd.testing.assert_frame_equal(
        pd.read_csv(project / targets[0], sep="\t"), pd.read_csv(full_run / targets[0], sep="\t")
    )
    assert yaml.safe_load((project / targets[1]).read_text()) == yaml.safe_load(
        (full_run / targets[1]).read_text()
    )
