"""Benchmark the sccohort workflow against a plain single-process Scanpy script of the same steps.

    python benchmarks/run_benchmark.py small            # 8 x 2,500 cells  (20k)
    python benchmarks/run_benchmark.py medium           # 8 x 12,500 cells (100k)
    python benchmarks/run_benchmark.py large            # 16 x 25,000 cells (400k)
    python benchmarks/run_benchmark.py small --skip-plain   (or --skip-workflow)

Steps: build the cohort (or reuse it: benchmarks/make_cohort.py, in benchmarks/work/<preset>),
then, one after the other in this invocation,
- the workflow: `snakemake --snakefile <repo>/Snakefile --workflow-profile none --cores 2` run
  from the project folder, from scratch (results/, logs/, benchmarks/ and .snakemake/ are
  removed first, so the numba cache in .snakemake/ is cold);
- the plain script (benchmarks/plain_scanpy.py) with a fresh NUMBA_CACHE_DIR (cold as well).
With --warm both keep their numba caches from the previous run (a user's second run).

Measured for each: wall time; peak RSS of the whole process tree (psutil polls the tree every
0.5 s and sums the RSS of all live processes; shared pages of forked workers count twice);
the largest single-process RSS (polled, and exact from wait4's ru_maxrss, which covers every
reaped descendant); CPU time of the tree (user + system, from wait4). For the workflow also the
per-rule figures from the rules' benchmark: files (jobs, summed and max wall time, max RSS),
for the plain script its step timings. Printed as a table and appended to
benchmarks/results/<preset>.json (one entry per run, with the machine's cores, RAM and load).

Timing is only meaningful on an otherwise idle machine: the load average at start and end is
recorded so that runs on a shared machine can be recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import make_cohort  # noqa: E402

MB = 1024 * 1024
WORKFLOW_STATE = ("results", "logs", "benchmarks", ".snakemake")
CACHE_DIR = "sccohort_cache"  # in .snakemake/: see scripts/sccohort/runtime.py configure_environment


# --------------------------------------------------------------------------------------------
# Measuring a process tree
# --------------------------------------------------------------------------------------------
class TreeMonitor(threading.Thread):
    """Polls a process and its descendants: peak summed RSS, peak single RSS, a timeline."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_tree = 0
        self.peak_single = 0
        self.peak_single_name = ""
        self.peak_procs = 0
        self.timeline: list[tuple[float, float, int]] = []
        self.start_time = time.perf_counter()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        alive = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            alive += 1
            total += rss
            if rss > self.peak_single:
                self.peak_single = rss
                try:
                    self.peak_single_name = _describe(proc)
                except psutil.Error:
                    pass
        self.peak_tree = max(self.peak_tree, total)
        self.peak_procs = max(self.peak_procs, alive)
        self.timeline.append((round(time.perf_counter() - self.start_time, 1), round(total / MB, 1), alive))

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def _describe(proc: psutil.Process) -> str:
    """A short name for a process: the rule script or python script it runs, else its name."""
    cmdline = proc.cmdline()
    for arg in cmdline[1:]:
        if arg.endswith(".py"):
            name = Path(arg).name
            # snakemake runs rule scripts as .snakemake/scripts/tmpXXXX.<script>.py
            return re.sub(r"^tmp[^.]*\.", "", name)
    return proc.name()


def run_measured(command: list[str], cwd: Path, log_path: Path, env: dict, interval: float = 0.5) -> dict:
    """Run `command`, measure its process tree, return wall/RSS/CPU figures."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        monitor = TreeMonitor(proc.pid, interval)
        monitor.start()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - start
        monitor.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_tree_rss_mb": round(monitor.peak_tree / MB, 1),
        "peak_single_rss_mb": round(monitor.peak_single / MB, 1),
        "peak_single_process": monitor.peak_single_name,
        # ru_maxrss (KB on Linux) of the child and every descendant it reaped: exact, not polled
        "max_single_rss_wait4_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "max_live_processes": monitor.peak_procs,
        "log": str(log_path),
        "_timeline": monitor.timeline,
    }


# --------------------------------------------------------------------------------------------
# The rules' benchmark files
# --------------------------------------------------------------------------------------------
def rule_benchmark_patterns(rules_dir: Path = REPO / "workflow" / "rules") -> list[tuple[str, re.Pattern]]:
    """(rule, regex of its benchmark path) for every rule with a benchmark: directive."""
    patterns = []
    for path in sorted(rules_dir.glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):(.*?)(?=^rule |\Z)", text, flags=re.M | re.S):
            rule, body = match.group(1), match.group(2)
            bench = re.search(r"benchmark:\s*\n?\s*f?[\"']([^\"']+)[\"']", body)
            if not bench:
                continue
            pattern = bench.group(1).replace("{{", "{").replace("}}", "}")
            n_wildcards = pattern.count("{")
            regex = re.escape(pattern)
            regex = re.sub(r"\\\{\w+\\\}", r"[^/]+", regex)
            patterns.append((n_wildcards, rule, re.compile(f"^{regex}$")))
    # exact paths first, so e.g. benchmarks/de/summary.tsv is not taken for {contrast}.tsv
    return [(rule, regex) for _, rule, regex in sorted(patterns, key=lambda p: p[0])]


def read_rule_benchmarks(project: Path) -> dict[str, dict]:
    """Per rule: jobs, summed and max wall seconds, max RSS (MB), summed CPU seconds."""
    import pandas as pd

    patterns = rule_benchmark_patterns()
    per_rule: dict[str, list] = {}
    for path in sorted((project / "benchmarks").rglob("*.tsv")):
        relative = path.relative_to(project).as_posix()
        rule = next((r for r, regex in patterns if regex.match(relative)), path.stem)
        try:
            table = pd.read_csv(path, sep="\t")
        except (OSError, ValueError):
            continue
        per_rule.setdefault(rule, []).append(table)
    summary = {}
    for rule, tables in per_rule.items():
        table = pd.concat(tables, ignore_index=True)
        number = {
            c: pd.to_numeric(table[c], errors="coerce") for c in ("s", "max_rss", "cpu_time") if c in table
        }
        summary[rule] = {
            "jobs": len(table),
            "sum_s": round(float(number["s"].sum()), 1),
            "max_s": round(float(number["s"].max()), 1),
            "max_rss_mb": round(float(number["max_rss"].max()), 1) if "max_rss" in number else None,
            "cpu_s": round(float(number["cpu_time"].sum()), 1) if "cpu_time" in number else None,
        }
    return dict(sorted(summary.items(), key=lambda item: -item[1]["sum_s"]))


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------
def machine_info() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "snakemake",
        "scanpy",
        "anndata",
        "numpy",
        "scipy",
        "scrublet",
        "harmonypy",
        "pydeseq2",
        "numba",
        "scikit-misc",
        "illico",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def git_commit() -> str | None:
    """The commit of the workflow being measured (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip() or None


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------
def clear_workflow_state(project: Path, keep_cache: bool = False) -> None:
    """Remove the outputs, logs, benchmarks and .snakemake/ of a previous run (but the numba and
    matplotlib caches in .snakemake/sccohort_cache when keep_cache)."""
    for name in WORKFLOW_STATE:
        target = project / name
        if not target.is_dir():
            continue
        if name == ".snakemake" and keep_cache:
            for child in target.iterdir():
                if child.name != CACHE_DIR:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(target)


def run_workflow(project: Path, cores: int, interval: float, warm: bool = False) -> dict:
    clear_workflow_state(project, keep_cache=warm)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # the workflow keeps its numba/matplotlib caches in .snakemake/sccohort_cache
    for name in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        env.pop(name, None)
    command = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--workflow-profile",
        "none",
        "--cores",
        str(cores),
    ]
    print(f"workflow: {' '.join(command)}  (in {project})", flush=True)
    result = run_measured(command, project, project / "benchmark_logs" / "workflow.log", env, interval)
    result["command"] = " ".join(command)
    result["rules"] = read_rule_benchmarks(project)
    try:
        import pandas as pd

        merged = pd.read_csv(project / "results" / "cohort" / "merge_summary.tsv", sep="\t")
        result["n_cells_analysed"] = int(merged["n_cells"].sum())
    except (OSError, ValueError, KeyError):
        result["n_cells_analysed"] = None
    return result


def run_plain(project: Path, interval: float, warm: bool = False) -> dict:
    out = project / "plain"
    if out.is_dir():
        shutil.rmtree(out)
    cache = project / "benchmark_logs" / "plain_numba_cache"
    if cache.is_dir() and not warm:
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "NUMBA_CACHE_DIR": str(cache)}
    command = [sys.executable, str(HERE / "plain_scanpy.py"), "--project", str(project), "--out", str(out)]
    print(f"plain:    {' '.join(command)}", flush=True)
    result = run_measured(command, project, project / "benchmark_logs" / "plain.log", env, interval)
    result["command"] = " ".join(command)
    try:
        result["steps"] = json.loads((out / "timings.json").read_text())
    except (OSError, ValueError):
        result["steps"] = {}
    result["n_cells_analysed"] = result["steps"].pop("n_cells_analysed", None)
    return result


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def print_report(record: dict) -> None:
    cohort, machine = record["cohort"], record["machine"]
    print()
    commit = f" (commit {record['commit']})" if record.get("commit") else ""
    print(f"== {record['date']} {record.get('label') or ''}{commit}")
    print(
        f"sccohort benchmark '{record['name']}': {cohort['n_samples']} samples x "
        f"{cohort['cells_per_sample']:,} cells = {cohort['n_cells']:,} cells (seed {cohort['seed']})"
    )
    print(
        f"machine: {machine['usable_cores']} usable cores ({machine['logical_cores']} logical), "
        f"{machine['ram_gb']} GB RAM, {machine['cpu_model']}"
    )
    print(f"numba cache: {record.get('numba_cache', 'cold')}")
    print(
        f"load average (1 min) at start {record['load_start'][0]:.1f}, at end {record['load_end'][0]:.1f}"
        + ("   ** shared/busy machine: timings are noisy **" if record["busy"] else "")
    )
    header = (
        f"{'':24}{'wall s':>10}{'CPU s':>10}{'peak RSS tree MB':>18}{'max 1-proc RSS MB':>19}{'cells':>9}  ok"
    )
    print()
    print(header)
    print("-" * len(header))
    for key, label in (
        ("workflow", f"workflow (--cores {record['cores']})"),
        ("plain", "plain scanpy script"),
    ):
        run = record.get(key)
        if run:
            print(
                f"{label:24}{run['wall_s']:>10.1f}{run['cpu_s']:>10.1f}{run['peak_tree_rss_mb']:>18,.0f}"
                f"{max(run['peak_single_rss_mb'], run['max_single_rss_wait4_mb']):>19,.0f}"
                f"{run.get('n_cells_analysed') or 0:>9,}"
                f"  {'yes' if run['returncode'] == 0 else 'FAILED rc=' + str(run['returncode'])}"
            )
    ratios = record.get("ratios")
    if ratios:
        print(
            f"{'ratio workflow / plain':24}{ratios['wall'] or float('nan'):>10.2f}"
            f"{ratios['cpu'] or float('nan'):>10.2f}{ratios['peak_tree_rss'] or float('nan'):>18.2f}"
            f"{ratios['max_single_rss'] or float('nan'):>19.2f}"
        )
        print("targets (issue 9, at 100k cells): wall ratio <= 0.70, peak RSS ratio <= 0.50")
    workflow = record.get("workflow")
    if workflow and workflow.get("rules"):
        print()
        print("workflow rules (from benchmark: files)")
        head = f"{'rule':24}{'jobs':>6}{'sum s':>10}{'max s':>10}{'CPU s':>10}{'max RSS MB':>12}"
        print(head)
        print("-" * len(head))
        for rule, r in workflow["rules"].items():
            print(
                f"{rule:24}{r['jobs']:>6}{r['sum_s']:>10.1f}{r['max_s']:>10.1f}"
                f"{(r['cpu_s'] or 0):>10.1f}{(r['max_rss_mb'] or 0):>12,.0f}"
            )
        total = sum(r["sum_s"] for r in workflow["rules"].values())
        print(
            f"{'sum over jobs':24}{'':>6}{total:>10.1f}   (wall {workflow['wall_s']:.1f} s with "
            f"{record['cores']} cores; the rest is scheduling and start-up)"
        )
    plain = record.get("plain")
    if plain and plain.get("steps"):
        print()
        print("plain script steps (s)")
        for step, seconds in plain["steps"].items():
            if isinstance(seconds, (int, float)):
                print(f"  {step:22}{seconds:>10.1f}")
            else:
                print(f"  {step:22}{seconds!s:>10}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", nargs="?", choices=sorted(make_cohort.PRESETS))
    parser.add_argument("--n-samples", type=int, help="override the preset's number of samples")
    parser.add_argument("--cells-per-sample", type=int, help="override the preset's cells per sample")
    parser.add_argument("--project", type=Path, help="cohort/project folder (default benchmarks/work/<name>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--skip-workflow", action="store_true")
    parser.add_argument("--interval", type=float, default=0.5, help="RSS polling interval (s)")
    parser.add_argument(
        "--warm",
        action="store_true",
        help="keep both numba caches from the previous run (default: both start with an empty cache)",
    )
    parser.add_argument("--label", default="", help="free text stored with the run (e.g. 'baseline')")
    parser.add_argument("--results", type=Path, help="JSON file (default benchmarks/results/<name>.json)")
    parser.add_argument("--show", type=Path, help="print the runs recorded in this results JSON and exit")
    args = parser.parse_args(argv)
    if args.show:
        for run in json.loads(args.show.read_text())["runs"]:
            print_report(run)
        return 0

    n_samples, cells = make_cohort.PRESETS.get(args.preset, (None, None))
    n_samples = args.n_samples or n_samples
    cells = args.cells_per_sample or cells
    if not n_samples or not cells:
        parser.error("give a preset or both --n-samples and --cells-per-sample")
    custom = args.n_samples or args.cells_per_sample or not args.preset
    name = f"custom_{n_samples}x{cells}" if custom else args.preset
    project = (args.project or HERE / "work" / name).resolve()
    results_path = args.results or HERE / "results" / f"{name}.json"

    if make_cohort.cohort_is_built(project, n_samples, cells, args.seed):
        print(f"Reusing the cohort in {project}.", flush=True)
    else:
        print(f"Building the cohort in {project} ...", flush=True)
        make_cohort.build_cohort(project, n_samples, cells, seed=args.seed, preset=args.preset)
    manifest = json.loads((project / "cohort.json").read_text())

    record = {
        "name": name,
        "label": args.label,
        "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": args.cores,
        "numba_cache": "warm (kept from the previous run)" if args.warm else "cold (emptied before each run)",
        "cohort": {
            "n_samples": n_samples,
            "cells_per_sample": cells,
            "n_cells": n_samples * cells,
            "seed": args.seed,
            "input_mb": round(sum(s["file_mb"] for s in manifest["samples"]), 1),
        },
        "machine": machine_info(),
        "versions": versions(),
        "load_start": list(os.getloadavg()),
    }
    timelines = {}
    if not args.skip_workflow:
        record["workflow"] = run_workflow(project, args.cores, args.interval, warm=args.warm)
        timelines["workflow"] = record["workflow"].pop("_timeline")
    if not args.skip_plain:
        record["plain"] = run_plain(project, args.interval, warm=args.warm)
        timelines["plain"] = record["plain"].pop("_timeline")
    record["load_end"] = list(os.getloadavg())
    record["busy"] = (
        max(record["load_start"][0], record["load_end"][0]) > 1.5 * record["machine"]["usable_cores"]
    )
    workflow, plain = record.get("workflow"), record.get("plain")
    if workflow and plain:
        record["ratios"] = {
            "wall": ratio(workflow["wall_s"], plain["wall_s"]),
            "cpu": ratio(workflow["cpu_s"], plain["cpu_s"]),
            "peak_tree_rss": ratio(workflow["peak_tree_rss_mb"], plain["peak_tree_rss_mb"]),
            "max_single_rss": ratio(
                max(workflow["peak_single_rss_mb"], workflow["max_single_rss_wait4_mb"]),
                max(plain["peak_single_rss_mb"], plain["max_single_rss_wait4_mb"]),
            ),
        }
    print_report(record)

    (project / "benchmark_logs" / "timelines.json").write_text(json.dumps(timelines))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        history = json.loads(results_path.read_text())
    except (OSError, ValueError):
        history = {"name": name, "runs": []}
    history["runs"].append(record)
    results_path.write_text(json.dumps(history, indent=1) + "\n")
    print(
        f"\nRecorded in {results_path} (run {len(history['runs'])}); memory timelines in "
        f"{project / 'benchmark_logs' / 'timelines.json'}."
    )
    failed = [k for k in ("workflow", "plain") if record.get(k) and record[k]["returncode"] != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see the logs in {project / 'benchmark_logs'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
