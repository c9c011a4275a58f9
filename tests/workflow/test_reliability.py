"""Interrupted runs resume, reruns are identical, and nothing is fetched at run time (issue 8).

The reference is conftest.full_run: rule all on 4 real samples x 400 cells, `--cores 2`.

The same project is run again here, the way a user's bad day goes: from a copy of full_run that
keeps only three samples' per-sample outputs (helpers.one_sample_to_redo: a run stopped after
them), with the network cut (`unshare -n`: a network namespace with no interface up) and
`--cores 1`, killed with SIGKILL (the whole process group: snakemake and its running job) during
the fourth sample's QC, during integration and during DE, and resumed each time with
`snakemake --unlock` and a rerun (`--rerun-incomplete`, as in profiles/default). It runs to the
DE summary (TARGET: every stage up to DE; the pages, figures and exports after it are run again
by the SLURM test) and must complete, leave no half-written file, and give tables, cluster
labels, cell types and DE results equal to the reference's. Equality with a `--cores 2` run also
shows that nothing depends on job order or thread count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from compare_results import assert_same_results, assert_same_run
from helpers import REPO, one_sample_to_redo, workflow_env

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# Kill points: (rule whose job is running, an output that must not exist after the kill)
KILL_POINTS = [
    ("qc_sample", "results/cohort/pca.h5ad"),
    ("cohort_cluster", "results/cohort/clustered.h5ad"),
    ("de_contrast", "results/de/summary.tsv"),
]
RUN_TIMEOUT_S = 1800
# what the killed run is asked for: QC, integration, annotation and DE of every sample
TARGET = "results/de/summary.tsv"


def offline_prefix() -> list[str]:
    """`unshare -n` (root) or `unshare -rn` (user namespaces); skip when neither is allowed."""
    for prefix in (["unshare", "-n", "--"], ["unshare", "-rn", "--"]):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    pytest.skip("cannot cut the network here: neither `unshare -n` nor `unshare -rn` is permitted")


def snakemake_command(prefix: list[str], *args: str) -> list[str]:
    return [
        *prefix, SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--workflow-profile", "none",
        "--cores", "1", "--rerun-incomplete", *args,
    ]  # fmt: skip


def job_script_running(rule: str, group: int) -> bool:
    """Whether a job script of `rule` (.snakemake/scripts/tmp*.<rule>.py) runs in our process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            # another test's run may have a `rule` job too (xdist workers): look on, not give up
            if any(part.endswith(f".{rule}.py".encode()) for part in cmdline) and (
                os.getpgid(int(entry.name)) == group
            ):
                return True
        except (OSError, ProcessLookupError):
            continue
    return False


def kill_during(project: Path, prefix: list[str], rule: str) -> str:
    """Start the run, SIGKILL snakemake and its job once a `rule` job has worked for a second."""
    log = project / f"run_killed_during_{rule}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            snakemake_command(prefix, TARGET), cwd=project, env=workflow_env(),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not job_script_running(rule, process.pid):
            if process.poll() is not None:
                pytest.fail(f"the run ended (exit {process.returncode}) before {rule} started:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{rule} did not start within {RUN_TIMEOUT_S} s:\n{tail(log)}")
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"snakemake was not killed:\n{tail(log)}"
    return log.read_text(errors="replace")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run(project: Path, prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_command(prefix, *args), cwd=project, env=workflow_env(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{result.stderr[-6000:]}"
    return result


def partial_files(project: Path) -> list[Path]:
    return [p for p in (project / "results").rglob("*.partial")]


@pytest.mark.slow
def test_killed_offline_single_core_run_resumes_to_the_reference_results(full_run, tmp_path):
    prefix = offline_prefix()
    # the namespace really has no network
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import socket; socket.create_connection(('1.1.1.1', 443), timeout=5)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert probe.returncode != 0 and "Network is unreachable" in probe.stderr, probe.stderr

    project, redo = one_sample_to_redo(full_run, tmp_path / "killed")
    killed_in = []
    for rule, absent in KILL_POINTS:
        kill_during(project, prefix, rule)
        killed_in.append(rule)
        assert not (project / absent).exists(), f"killed during {rule}, yet {absent} exists"
        # the SIGKILLed snakemake leaves its lock behind: what a user does next
        run(project, prefix, "--unlock")
    result = run(project, prefix, TARGET)
    assert "Nothing to be done" not in result.stderr
    assert not partial_files(project), partial_files(project)

    tables = assert_same_run(full_run, project, targets_only=True)
    assert any(str(t).startswith("de/") for t in tables) and any(str(t).startswith("qc/") for t in tables)
    assert (project / "results" / "qc" / redo / "cells.tsv.gz").exists()
    print(f"\nkilled during {killed_in}; resumed offline at --cores 1; {len(tables)} tables equal")


def test_result_comparison_can_fail(tmp_path):
    """The comparison notices one changed value (and ignores time columns and project paths)."""
    for name, value in (("a", 0.5), ("b", 0.5)):
        (tmp_path / name / "results" / "qc").mkdir(parents=True)
        pd.DataFrame(
            {
                "cell": ["x", "y"],
                "score": [0.25, value],
                "runtime_s": [1.0, 2.0],
                "file": [str(tmp_path / name)] * 2,
            }
        ).to_csv(tmp_path / name / "results" / "qc" / "cells.tsv.gz", sep="\t", index=False)
    assert assert_same_results(tmp_path / "a", tmp_path / "b") == [Path("qc/cells.tsv.gz")]
    pd.DataFrame({"cell": ["x", "y"], "score": [0.25, 0.5000001]}).to_csv(
        tmp_path / "b" / "results" / "qc" / "cells.tsv.gz", sep="\t", index=False
    )
    with pytest.raises(AssertionError):
        assert_same_results(tmp_path / "a", tmp_path / "b")


def test_comparison_of_a_targets_run_reads_its_tables_only(tmp_path):
    """targets_only: the other run may lack tables of the reference, not hold tables it lacks."""
    for name, tables in (("ref", ("qc/a.tsv", "de/b.tsv")), ("part", ("qc/a.tsv",))):
        for rel in tables:
            (tmp_path / name / "results" / rel).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / name / "results" / rel, sep="\t", index=False)
    assert assert_same_results(tmp_path / "ref", tmp_path / "part", targets_only=True) == [Path("qc/a.tsv")]
    with pytest.raises(AssertionError):  # without targets_only a missing table fails
        assert_same_results(tmp_path / "ref", tmp_path / "part")
    (tmp_path / "part" / "results" / "qc" / "extra.tsv").write_text("x\n1\n")
    with pytest.raises(AssertionError, match="extra"):
        assert_same_results(tmp_path / "ref", tmp_path / "part", targets_only=True)


def test_stale_partial_of_a_killed_write_is_removed(tmp_path):
    from sccohort.runtime import write_json

    target = tmp_path / "thresholds.json"
    stale = tmp_path / ".thresholds.json.abc123.partial"  # what a SIGKILL mid-write leaves
    stale.write_text('{"half": ')
    unrelated = tmp_path / ".other.json.abc123.partial"
    unrelated.write_text("x")
    write_json({"a": 1}, target)
    assert target.read_text().strip().startswith("{") and not stale.exists() and unrelated.exists()
