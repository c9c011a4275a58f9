"""Test data builders and runners shared by the suite: small runnable projects made of real cells,
and a Snakemake runner (conftest.py holds only the fixtures built from them).

`make_project` subsamples real cells from the bundled example (example/covid_pbmc, Lee et al.
2020) and writes them as 10x v3 mtx directories, so end-to-end tests exercise a real reader on
real counts, at a size that runs in a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
EXAMPLE = REPO / "example" / "covid_pbmc"
EXAMPLE_CONDITIONS = {
    "nCoV_PBMC_1": "COVID19",
    "nCoV_PBMC_15": "COVID19",
    "nCoV_PBMC_16": "COVID19",
    "nCoV_PBMC_17": "COVID19",
    "Normal_PBMC_5": "Normal",
    "Normal_PBMC_14": "Normal",
}
SMALL_SAMPLES = ("nCoV_PBMC_1", "nCoV_PBMC_17", "Normal_PBMC_5", "Normal_PBMC_14")


def write_10x_mtx(adata, folder: Path) -> None:
    """Write cells x genes raw counts as a Cell Ranger v3 mtx directory (gzipped)."""
    import gzip

    import scipy.io
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    # level 1: gzip's default level 9 took 13 of the 16 CPU s of a 4 x 400-cell test project
    with gzip.open(folder / "matrix.mtx.gz", "wb", compresslevel=1) as handle:
        scipy.io.mmwrite(handle, sp.csr_matrix(adata.X).T.tocoo().astype(np.int64), field="integer")
    features = pd.DataFrame(
        {
            "id": adata.var["gene_id"].to_numpy(),
            "name": adata.var["gene_symbol"].to_numpy(),
            "type": "Gene Expression",
        }
    )
    features.to_csv(folder / "features.tsv.gz", sep="\t", header=False, index=False, compression="gzip")
    pd.Series(adata.obs_names).to_csv(
        folder / "barcodes.tsv.gz", sep="\t", header=False, index=False, compression="gzip"
    )


def subsample_example(sample: str, n_cells: int, seed: int = 0, clean_fraction: float = 0.85):
    """Real cells of one bundled sample: mostly good-quality cells plus some low-quality ones.

    A plain random subsample of this data set loses ~35% of cells to QC; biasing towards good
    cells keeps small test samples above the doublet-calling minimum.
    """
    from sccohort.qc.load import read_sample

    adata = read_sample(EXAMPLE / f"{sample}.h5")
    counts = np.asarray(adata.X.sum(axis=1)).ravel()
    genes = np.diff(adata.X.indptr)
    mt = adata.var["gene_symbol"].str.startswith("MT-").to_numpy()
    pct_mt = 100 * np.asarray(adata.X[:, mt].sum(axis=1)).ravel() / np.maximum(counts, 1)
    good = np.flatnonzero((counts >= 1000) & (genes >= 400) & (pct_mt <= 15))
    rest = np.setdiff1d(np.arange(adata.n_obs), good)
    rng = np.random.default_rng(seed)
    n_good = min(len(good), int(round(n_cells * clean_fraction)))
    chosen = np.concatenate(
        [
            rng.choice(good, n_good, replace=False),
            rng.choice(rest, min(len(rest), n_cells - n_good), replace=False),
        ]
    )
    return adata[np.sort(chosen)].copy()


def make_project(
    root: Path,
    samples=SMALL_SAMPLES,
    n_cells: int = 400,
    config_overrides: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write a runnable project (config/, data/) under `root` and return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, sample in enumerate(samples):
        adata = subsample_example(sample, n_cells, seed=seed + i)
        folder = root / "data" / sample
        write_10x_mtx(adata, folder)
        rows.append(
            {
                "sample": sample,
                "path": f"data/{sample}",
                "condition": EXAMPLE_CONDITIONS[sample],
                "donor": f"donor_{sample.rsplit('_', 1)[-1]}",
                "batch": sample,
            }
        )
    (root / "config").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "config" / "samples.tsv", sep="\t", index=False)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples"] = "config/samples.tsv"
    deep_update(config, config_overrides or {})
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def deep_update(base: dict, updates: dict) -> dict:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


# One numba cache for every workflow run of the suite: each project would otherwise compile
# scanpy's and scrublet's numba functions again (~40 CPU s). Results do not depend on it.
NUMBA_CACHE = Path(tempfile.gettempdir()) / f"sccohort-tests-numba-{os.getuid()}"
# The same for JAX (scib-metrics in cohort_diagnostics): XLA's compiled programs, ~8 s a run;
# every compilation is cached, however short (jax's defaults keep only those over 1 s).
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / f"sccohort-tests-jax-{os.getuid()}"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}


def workflow_env() -> dict[str, str]:
    """The environment of the suite's snakemake runs: fixed hash seed, shared numba and JAX caches."""
    return {**os.environ, "PYTHONHASHSEED": "0", "NUMBA_CACHE_DIR": str(NUMBA_CACHE), **JAX_CACHE}


# Whether the running test is marked slow (set by conftest.py for each test). A run that executes
# jobs is an end-to-end run and belongs to a slow test, so that `make test-fast` (-m "not slow")
# runs none; dry runs (-n) are cheap and allowed anywhere.
RUNNING_SLOW_TEST = True


def run_workflow(project: Path, *targets: str, cores: int = 2, extra=(), check: bool = True):
    """Run the repository's workflow in `project`; return the CompletedProcess (output captured)."""
    dry = any(arg in ("-n", "--dry-run", "--dryrun") for arg in (*targets, *extra))
    if not dry and not RUNNING_SLOW_TEST:
        raise AssertionError("a workflow run that executes jobs, in a test not marked slow: mark it slow")
    command = [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--workflow-profile",
        "none",
        "--cores",
        str(cores),
        *extra,
        *targets,
    ]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, env=workflow_env())
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(targets)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def make_full_run_project(root: Path) -> Path:
    """The inputs and config of full_run (4 bundled samples x 400 cells, default config), unrun.

    The SLURM test runs it whole on SLURM; the kill/resume test starts from a copy of the finished
    run with one sample and the cohort to redo (one_sample_to_redo).
    """
    return make_project(root)


def shared_run(name: str, build, tmp_path_factory, worker_id) -> Path:
    """The folder or file `build(path)` makes at `path`, made once per test session and shared
    by the tests that read it, also across pytest-xdist workers: the first worker that needs it
    builds it under a file lock, the others wait for it and read the same path."""
    if worker_id == "master":  # no xdist
        project = tmp_path_factory.mktemp(name.replace(".", "_")) / name
        build(project)
        return project
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # one folder for all workers of this session
    project, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    with FileLock(str(shared / f"{name}.lock")):
        if failed.exists():  # do not run (and fail) it a second time on another worker
            raise AssertionError(f"{name} failed on another worker:\n{failed.read_text()}")
        if not done.exists():
            if project.is_dir():
                shutil.rmtree(project)
            project.unlink(missing_ok=True)
            try:
                build(project)
            except AssertionError as error:
                failed.write_text(str(error))
                raise
            done.touch()
    return project


def finished_copy(full_run: Path, destination: Path) -> Path:
    """full_run with its outputs, logs and Snakemake metadata, file times kept (copy2)."""
    shutil.copytree(full_run, destination, symlinks=True, ignore=shutil.ignore_patterns("sccohort_cache"))
    return destination


def one_sample_to_redo(full_run: Path, destination: Path) -> tuple[Path, str]:
    """(project, sample): a copy of the finished full_run (finished_copy) that keeps only the
    per-sample outputs (results/qc/<sample>/) of all samples but the last, as if a run had been
    stopped after them. A run there redoes that sample's per-sample jobs and every cohort job, so
    each rule runs once, and must end with full_run's results: the kill/resume test runs it
    another way, at a third of the cost of a whole run."""
    project = finished_copy(full_run, destination)
    samples = pd.read_csv(project / "config" / "samples.tsv", sep="\t", dtype=str)["sample"]
    redo = samples.iloc[-1]
    results = project / "results"
    keep = set(samples) - {redo}
    outputs = [p for p in results.iterdir() if p.name != "qc"]
    outputs += [p for p in (results / "qc").iterdir() if p.name not in keep]
    for path in outputs:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    assert (results / "qc").is_dir() and not (results / "qc" / redo).exists()
    return project, redo


# The one-sample pilot (README: "a one-sample pilot runs"): qc.min_samples_kept 1, DE off, and the
# names that used to trip pandas, matplotlib or the HTML: the sample id NA and the batch null
# (pandas reads both as missing), the donor None, markup in the condition and in two marker-table
# cell types (report.synthetic's hostile names), and mathtext matplotlib cannot parse ("$x^$",
# "$\\undefined$") in the condition and a cell type.
PILOT_SAMPLE, PILOT_DONOR, PILOT_BATCH = "NA", "None", "null"
PILOT_CELL_TYPE_DOLLAR = "CD4 $\\undefined$ T"


def pilot_names() -> dict[str, str]:
    """The pilot's condition and renamed marker-table cell types (marker table name -> new name)."""
    from report.synthetic import HOSTILE_CONDITION, HOSTILE_TYPE, HOSTILE_TYPE_2

    return {
        "condition": f"{HOSTILE_CONDITION} $x^$",
        "NK": HOSTILE_TYPE,
        "B": HOSTILE_TYPE_2,
        "CD4_T": PILOT_CELL_TYPE_DOLLAR,
    }


def make_pilot_project(root: Path, n_cells: int = 500) -> Path:
    """One bundled sample as the pilot (see PILOT_SAMPLE), unrun."""
    names = pilot_names()
    project = make_project(
        root,
        samples=("nCoV_PBMC_1",),
        n_cells=n_cells,
        config_overrides={
            "qc": {"min_samples_kept": 1},
            "de": {"contrasts": []},
            "annotation": {"markers": "config/markers.tsv"},
        },
    )
    (project / "data" / "nCoV_PBMC_1").rename(project / "data" / PILOT_SAMPLE)
    sheet = pd.DataFrame(
        [
            {
                "sample": PILOT_SAMPLE,
                "path": f"data/{PILOT_SAMPLE}",
                "condition": names["condition"],
                "donor": PILOT_DONOR,
                "batch": PILOT_BATCH,
            }
        ]
    )
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    markers = pd.read_csv(
        REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv", sep="\t", comment="#"
    )
    markers["cell_type"] = markers["cell_type"].replace({k: v for k, v in names.items() if k != "condition"})
    markers.to_csv(project / "config" / "markers.tsv", sep="\t", index=False)
    return project


def run_pilot(project: Path, timeout_s: int = 3600) -> Path:
    """Rule all on `project` (--cores 2, --rerun-incomplete as profiles/default sets it); once its
    first job runs, a second identical snakemake is started in the same folder, as a user might by
    mistake. Its exit code and output go to second_snakemake.json; the first run must succeed."""
    import json
    import time

    command = [
        str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
        "--workflow-profile", "none", "--cores", "2", "--rerun-incomplete",
    ]  # fmt: skip
    with (project / "run.log").open("w") as log:
        first = subprocess.Popen(
            command, cwd=project, stdout=log, stderr=subprocess.STDOUT, env=workflow_env()
        )
        try:
            started = project / "logs" / "qc" / PILOT_SAMPLE / "load_sample.log"
            deadline = time.monotonic() + timeout_s
            while not started.exists() and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            second = subprocess.run(command, cwd=project, capture_output=True, text=True, env=workflow_env())
            overlapped = started.exists() and first.poll() is None  # the first ran all along
            code = first.wait(timeout=timeout_s)
        finally:
            if first.poll() is None:
                first.kill()
    if code != 0:
        raise AssertionError(f"the pilot run failed ({code}):\n{(project / 'run.log').read_text()[-8000:]}")
    record = {"overlapped": overlapped, "returncode": second.returncode}
    record["output"] = second.stdout + second.stderr
    (project / "second_snakemake.json").write_text(json.dumps(record))
    return project


def copy_project(source: Path, destination: Path) -> Path:
    shutil.copytree(
        source, destination, ignore=shutil.ignore_patterns(".snakemake", "results", "logs", "benchmarks")
    )
    return destination
