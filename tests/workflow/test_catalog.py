"""The repository as the Snakemake workflow catalog sees it: workflow/Snakefile (the file its
crawler reads when a workflow/ folder exists) plans the same jobs as the top-level Snakefile, the
tiny .test/ config dry-runs through it, there is a licence, CI runs the linters, and the docs give
one profile command (--workflow-profile) for SLURM."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import workflow_env

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def dry_run_jobs(snakefile: Path, workdir: Path) -> list[tuple[str, str]]:
    """The jobs `snakemake -n` plans with `snakefile` in `workdir` (its default target): one
    (rule, outputs) pair per job, sorted."""
    result = subprocess.run(
        [SNAKEMAKE, "-n", "-s", str(snakefile), "-d", str(workdir), "--workflow-profile", "none"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=workflow_env(),
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    jobs = []
    for block in re.split(r"\n(?=rule \w+:\n)", result.stdout):
        match = re.match(r"rule (\w+):\n", block)
        if match:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.append((match.group(1), outputs.group(1) if outputs else ""))
    return sorted(jobs)


def test_workflow_snakefile_plans_the_same_jobs_as_the_top_level_one():
    """Both entry points dry-run the catalog's tiny test config (snakemake -s workflow/Snakefile
    -d .test: four bundled samples) with the same jobs."""
    assert (REPO / "workflow" / "Snakefile").is_file()
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    assert (REPO / ".test" / config["samples"]).is_file()
    top = dry_run_jobs(REPO / "Snakefile", REPO / ".test")
    catalog = dry_run_jobs(REPO / "workflow" / "Snakefile", REPO / ".test")
    rules = [rule for rule, _ in top]
    assert rules.count("load_sample") == 4 and rules.count("all") == 1
    assert {"cohort_merge", "annotate_cells", "de_contrast", "report_html"} <= set(rules)
    assert catalog == top


def test_licence_and_catalog_settings():
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the sccohort authors" in licence
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert usage["report"] is True
    assert "--workflow-profile profiles/slurm" in usage["mandatory-flags"]["desc"]


def test_ci_runs_lint_before_the_tests():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "make lint" in lines
    assert lines.index("make lint") < next(i for i, line in enumerate(lines) if line.startswith("make test"))


def test_docs_give_the_workflow_profile_command_for_slurm():
    """`--profile profiles/slurm` on top of the automatic default workflow profile caps every
    cluster job at the login node's cores (docs/deployment.md): only --workflow-profile, or
    --profile together with --workflow-profile none, may be recommended."""
    for path in ("config/README.md", "docs/deployment.md", "README.md", ".snakemake-workflow-catalog.yml"):
        text = (REPO / path).read_text()
        for match in re.finditer(r"snakemake [^\n`]*--profile profiles/slurm[^\n`]*", text):
            assert "--workflow-profile none" in match.group(0), f"{path}: {match.group(0)}"
    assert "--workflow-profile profiles/slurm" in (REPO / "config" / "README.md").read_text()
