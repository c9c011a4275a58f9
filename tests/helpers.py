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
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
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


def workflow_env() -> dict[str, str]:
    """The environment of the suite's snakemake runs: fixed hash seed, shared numba cache."""
    return {**os.environ, "PYTHONHASHSEED": "0", "NUMBA_CACHE_DIR": str(NUMBA_CACHE)}


def run_workflow(project: Path, *targets: str, cores: int = 2, extra=(), check: bool = True):
    """Run the repository's workflow in `project`; return the CompletedProcess (output captured)."""
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

    Tests that run the same project another way (SLURM, killed and resumed) start from this and
    ask for the full_run fixture only when they compare, so that their own run can overlap with
    full_run's on another xdist worker.
    """
    return make_project(root)


def copy_project(source: Path, destination: Path) -> Path:
    shutil.copytree(
        source, destination, ignore=shutil.ignore_patterns(".snakemake", "results", "logs", "benchmarks")
    )
    return destination
