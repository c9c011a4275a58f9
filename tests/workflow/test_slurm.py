"""The whole workflow on a real SLURM cluster (single node, localhost) with profiles/slurm.

A fixture installs Debian's slurm-wlm, munge, slurmdbd and mariadb-server when they are
missing (apt-get, root), starts the cluster with accounting (tests/slurm_cluster.py), and
stops every daemon it started afterwards. The tests:

* run `rule all` with the SLURM profile on a fresh copy of full_run's project
  (helpers.make_full_run_project), so that every job of a whole run runs, and check, in SLURM's
  accounting records (sacct), that every job ran as a SLURM job and completed, and that every
  result table equals full_run's (the same project run locally with --cores 2). It does not
  start from full_run's outputs, so it runs beside the local run instead of after it;
* run a few jobs on a cluster *without* accounting with the same profile (minus the account),
  the setting under which the plugin's default status command (sacct) hangs forever.

Skipped, with the reason, where SLURM cannot be installed (not root, no apt-get).
SCCOHORT_SLURM_INSTALL=0 forbids installing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

from compare_results import assert_same_run  # noqa: E402
from helpers import make_full_run_project, run_workflow, workflow_env  # noqa: E402
from slurm_cluster import ACCOUNT, PARTITION, SlurmCluster, ensure_slurm_installed  # noqa: E402
from workflow_rules import load_rules  # noqa: E402

pytestmark = [pytest.mark.slurm]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# helpers.run_workflow runs the local reference (full_run) with --cores 2 and PYTHONHASHSEED=0
LOCAL_CORES = 2
RUN_TIMEOUT_S = 1800  # a hanging status loop must fail the test, not stall CI


# ---------------------------------------------------------------------------- running snakemake


def _run_snakemake(args: list[str], cwd: Path, env: dict, log_name: str) -> str:
    """Run snakemake in its own process group; on timeout kill that group (ours) and fail."""
    log = cwd / log_name
    with open(log, "w") as out:
        process = subprocess.Popen(
            [SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT_S} s:\n{_tail(log)}")
    text = log.read_text(errors="replace")
    assert returncode == 0, f"snakemake {' '.join(args)} failed (exit {returncode}):\n{_tail(log, 80)}"
    return text


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _slurm_profile(dest: Path, account: str | None) -> Path:
    """profiles/slurm with its placeholders filled in, as a user would edit it."""
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert "YOUR_PARTITION" in text and "YOUR_ACCOUNT" in text
    text = text.replace("YOUR_PARTITION", PARTITION)
    if account is None:  # clusters without accounting: delete the slurm_account line
        text = re.sub(r"(?m)^\s*slurm_account:.*\n", "", text)
    else:
        text = text.replace("YOUR_ACCOUNT", account)
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(text)
    return dest


def _slurm_args(profile: Path, threads: int) -> list[str]:
    return [
        "--profile", str(profile),
        "--workflow-profile", "none",
        # the node has `threads` CPUs; a rule asking for more could never be scheduled
        "--max-threads", str(threads),
        # small jobs: first status check after 2 s instead of 20 s (MinJobAge 600 >= 3 x 2); the
        # plugin adds 10 s per check that finds nothing finished, so this bounds the latency
        "--slurm-init-seconds-before-status-checks", "2",
        "--latency-wait", "10",
    ]  # fmt: skip


def _env(cluster: SlurmCluster) -> dict:
    return {**workflow_env(), **cluster.env}  # hash seed and numba cache as helpers.run_workflow


def _job_stats(log_text: str) -> dict[str, int]:
    """The 'Job stats' table snakemake prints when it starts: {rule: number of jobs}."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", log_text, re.S)
    assert match, "no job stats in the snakemake log"
    return {name: int(count) for name, count in (line.split() for line in match.group(1).splitlines())}


# ---------------------------------------------------------------------------- comparing results

# ---------------------------------------------------------------------------- the cluster


def _install_or_skip() -> None:
    reason = ensure_slurm_installed(allow_install=os.environ.get("SCCOHORT_SLURM_INSTALL", "1") != "0")
    if reason:
        pytest.skip(reason)


def _cluster(accounting: bool):
    _install_or_skip()
    cluster = SlurmCluster(accounting=accounting)
    try:
        cluster.start()
    except RuntimeError as error:
        cluster.remove()
        pytest.fail(f"could not start the SLURM test cluster: {error}")
    return cluster


def _teardown(cluster: SlurmCluster) -> None:
    started = dict(cluster.pids)
    cluster.stop()
    left = {name: pid for name, pid in started.items() if Path(f"/proc/{pid}").exists() and _not_zombie(pid)}
    cluster.remove()
    assert not left, f"daemons still running after stop(): {left}"


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def slurm_with_accounting():
    cluster = _cluster(accounting=True)
    yield cluster
    _teardown(cluster)


@pytest.fixture
def slurm_without_accounting():
    cluster = _cluster(accounting=False)
    yield cluster
    _teardown(cluster)


# ---------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_whole_workflow_on_slurm_equals_local_run(slurm_with_accounting, request, tmp_path):
    """rule all through profiles/slurm: every job of a whole run is a SLURM job that completed,
    and every table equals the local run's."""
    cluster = slurm_with_accounting
    remote = make_full_run_project(tmp_path / "slurm")
    # the jobs of a whole run, from a dry run
    whole = run_workflow(remote, "-n")
    whole_run_jobs = _job_stats(whole.stdout + whole.stderr)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    profile = _slurm_profile(tmp_path / "profile", account=ACCOUNT)
    args = _slurm_args(profile, threads=min(LOCAL_CORES, cluster.cpus))
    log = _run_snakemake(args, remote, _env(cluster), "snakemake_slurm.log")

    # which rules submit jobs: Snakemake's own view of the workflow (target-only and local rules do not)
    job_rules = {r.name for r in load_rules(workdir=remote) if r.runs_job}
    expected = {rule: n for rule, n in _job_stats(log).items() if rule in job_rules}
    assert expected, f"no job rule in the run's job stats: {_job_stats(log)}"

    fields = ("JobIDRaw", "JobName", "Comment", "Account", "Partition", "State", "ExitCode")
    records: list[dict] = []
    deadline = time.monotonic() + 60  # slurmctld hands finished jobs to slurmdbd asynchronously
    while time.monotonic() < deadline:
        records = cluster.sacct(*fields, since=started)
        if sum(r["State"] == "COMPLETED" for r in records) >= sum(expected.values()):
            break
        time.sleep(1)
    completed: dict[str, int] = {}
    for record in records:
        rule = next(
            (
                name
                for name in sorted(job_rules, key=len, reverse=True)
                if record["Comment"] == f"rule_{name}"
                or record["Comment"].startswith(f"rule_{name}_wildcards_")
            ),
            None,
        )
        assert rule is not None, f"SLURM job {record} is not from a rule of this workflow"
        assert record["State"] == "COMPLETED" and record["ExitCode"] == "0:0", (
            f"SLURM job did not succeed: {record}"
        )
        assert record["Account"] == ACCOUNT and record["Partition"] == PARTITION, record
        completed[rule] = completed.get(rule, 0) + 1
    assert completed == expected, (
        f"SLURM accounting (jobs per rule) {completed} != jobs snakemake ran {expected}"
    )
    # one workflow run: the plugin names every job after the run's UUID
    assert len({r["JobName"] for r in records}) == 1

    # every job of a whole run of this project ran here, so as a SLURM job
    assert expected == {rule: n for rule, n in whole_run_jobs.items() if rule in job_rules}, (
        expected,
        whole_run_jobs,
    )
    samples = pd.read_csv(remote / "config" / "samples.tsv", sep="\t", dtype=str)["sample"]
    assert expected["qc_sample"] == len(samples) > 1 and expected["cohort_cluster"] == 1, expected
    # tables, and the Leiden, cell-type and doublet columns of integrated.h5ad, equal full_run's
    # (the same project run locally with --cores 2); by now the local run is (being) made
    tables = assert_same_run(request.getfixturevalue("full_run"), remote)
    assert any(str(t).startswith("qc/") for t in tables)
    print(
        f"\nSLURM jobs per rule: {completed}\ncompared {len(tables)} result tables: {list(map(str, tables))}"
    )


@pytest.mark.slow
def test_slurm_profile_works_without_accounting(slurm_without_accounting, request, tmp_path):
    """Without slurmdbd, sacct fails; the profile's squeue status command still finishes the run."""
    cluster = slurm_without_accounting
    assert cluster.run("sacct", check=False).returncode != 0  # really no accounting here
    remote = make_full_run_project(tmp_path / "slurm")
    profile = _slurm_profile(tmp_path / "profile", account=None)
    sample = pd.read_csv(remote / "config" / "samples.tsv", sep="\t")["sample"].iloc[0]
    target = f"results/qc/{sample}/thresholds.json"
    args = [*_slurm_args(profile, min(LOCAL_CORES, cluster.cpus)), target]
    log = _run_snakemake(args, remote, _env(cluster), "snakemake_slurm.log")
    n_jobs = sum(_job_stats(log).values())
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert n_jobs >= 2 and len(submitted) == n_jobs, f"{n_jobs} jobs but SLURM job ids {submitted}"
    assert (remote / target).read_text() == (request.getfixturevalue("full_run") / target).read_text()


def test_missing_slurm_is_reported_not_installed_when_installing_is_off(monkeypatch, tmp_path):
    """Where SLURM is absent and may not be installed, the reason names what is missing."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("slurm_cluster._which", lambda name: None)
    reason = ensure_slurm_installed(allow_install=False)
    assert reason is not None and "sbatch" in reason and "slurmdbd" in reason
