"""A project folder of the user's own, made the documented way (README, "Your own data", step 0:
snakedeploy deploy-workflow from a local clone), outside the repository, run on real shallow data.

The README's recipe block is run as it is, with `path/to/sccohort` replaced by a fresh copy of the
repository (what a clone holds: no .venv, results or logs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import workflow_env

REPO = Path(__file__).resolve().parents[2]
HASHING = REPO / "tests" / "data" / "hashing"
BIN = Path(sys.executable).parent


def deploy_recipe() -> str:
    """The bash block under the deploy-recipe marker of README.md."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- deploy-recipe:.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, "README.md has no deploy-recipe block"
    return "\n".join(line.strip() for line in match.group(1).splitlines())


def fresh_clone(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv", ".snakemake", "results", "logs", ".git", "__pycache__", ".ruff_cache"
    )
    shutil.copytree(REPO, destination, ignore=ignore)
    (destination / "benchmarks").mkdir(exist_ok=True)
    return destination


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**workflow_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_documented_project_folder_runs_qc_on_shallow_data(tmp_path):
    clone = fresh_clone(tmp_path / "clone" / "sccohort")
    work = tmp_path / "work"
    work.mkdir()
    recipe = deploy_recipe().replace("path/to/sccohort", str(clone))
    deployed = run(["bash", "-euo", "pipefail", "-c", recipe], work)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    project = work / "myproject"
    assert (project / "profiles" / "default" / "config.yaml").is_file()
    # the catalog entry point, workflow/Snakefile, is what snakedeploy names (the sed points it at the clone)
    assert f'"{clone}/workflow/Snakefile"' in (project / "workflow" / "Snakefile").read_text()
    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    assert config["de"]["contrasts"] == [] and config["samples"] == "config/samples.tsv"
    assert not (project / "config" / "template").exists()

    # The user's own data: two shallow hashing samples (GSE108313, ~520 UMI per cell).
    for sample in ("htoC", "htoE"):
        shutil.copytree(HASHING / sample, project / "data" / sample)
    sheet = pd.DataFrame(
        {
            "sample": ["htoC", "htoE"],
            "path": ["data/htoC", "data/htoE"],
            "condition": "PBMC",
            "donor": ["C", "E"],
        }
    )
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)

    # plain `snakemake` in the folder: its own workflow profile (profiles/default), the module's rules
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "2"], project)
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output[-5000:]
    assert "workflow specific profile profiles/default" in output
    assert "2 probed (2 10x_mtx)" in output and "no contrast (de.contrasts is empty)" in output
    assert "Shell command" not in output

    result = run([str(BIN / "snakemake"), "--cores", "2", "qc"], project)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Shell command: None" not in output and "Transforming to str index" not in output
    summary = pd.read_csv(project / "results" / "qc" / "summary.tsv", sep="\t")
    assert list(summary["sample"]) == ["htoC", "htoE"]
    # the shipped floors keep most of these shallow cells (500 counts removed about half)
    assert (summary["kept"] / summary["cells_in"] > 0.8).all(), summary.to_string()
    assert (project / "results" / "qc" / "summary.html").is_file()
    assert not (clone / "results").exists(), "the run wrote into the clone"
