"""Fixtures of the cohort-stage tests (sccohort.cohort).

Known answers come from real cells with published labels: 1,200 PBMCs of 10x pbmc4k annotated by
the SoupX authors (tests/data/cohort, see PROVENANCE.txt), split into three pseudo-samples with
a strong planted per-sample batch effect (in each sample 800 random genes are multiplied by 4 or
thinned to 25%, seeded). The cell types are the same in every pseudo-sample, so a good
integration must mix the samples and keep the types apart.

The merged and the clustered cohort are session-scoped: several test modules read them, and
none changes them (tests work on copies).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import shared_run
from sccohort.cohort.cluster import integrate_and_cluster
from sccohort.cohort.rules import prepare_cohort

DATA = Path(__file__).resolve().parents[1] / "data" / "cohort" / "pbmc4k_1200cells_4000genes.h5ad"
N_SAMPLES = 3
SEED = 0


def _filtered_like(
    counts: sp.csr_matrix, barcodes, genes: pd.DataFrame, sample: str, extra_obs=None
) -> ad.AnnData:
    """An AnnData shaped like the per-sample stage's filtered.h5ad."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    total = np.asarray(counts.sum(axis=1)).ravel()
    mt = genes["gene_symbol"].str.startswith("MT-").to_numpy()
    obs = pd.DataFrame(index=pd.Index(barcodes, name=None))
    obs["sample"] = sample
    obs["condition"] = "stim" if sample.endswith(("1", "3")) else "ctrl"
    obs["donor"] = f"donor_{sample}"
    obs["batch"] = sample
    obs["total_counts"] = total
    obs["n_genes_by_counts"] = np.diff(counts.indptr)
    obs["pct_counts_mt"] = 100 * np.asarray(counts[:, mt].sum(axis=1)).ravel() / np.maximum(total, 1)
    obs["doublet_score"] = np.linspace(0, 0.2, counts.shape[0])
    obs["predicted_doublet"] = False
    for key, value in (extra_obs or {}).items():
        obs[key] = value
    var = genes.set_index(genes["gene_symbol"].to_numpy())
    var.index.name = None
    adata = ad.AnnData(X=counts, obs=obs, var=var[["gene_id", "gene_symbol", "feature_types"]])
    adata.uns["qc_thresholds"] = {"min_counts": 500.0, "max_genes": None}
    return adata


@pytest.fixture(scope="session")
def filtered_like():
    """Factory: filtered_like(counts, barcodes, genes, sample) -> an AnnData like filtered.h5ad."""
    return _filtered_like


@pytest.fixture(scope="session")
def pbmc() -> ad.AnnData:
    adata = ad.read_h5ad(DATA)
    adata.var["gene_symbol"] = adata.var_names.astype(str)
    adata.var["gene_id"] = [f"GENE{i:05d}" for i in range(adata.n_vars)]  # ids differ from symbols
    adata.var["feature_types"] = "Gene Expression"
    return adata


@pytest.fixture(scope="session")
def planted(pbmc, tmp_path_factory):
    """Three pseudo-samples with a planted batch effect, written as filtered.h5ad files."""
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(1)
    assignment = rng.integers(0, N_SAMPLES, pbmc.n_obs)
    paths = {}
    for s in range(N_SAMPLES):
        sample = f"S{s}"
        part = pbmc[assignment == s]
        counts = sp.csr_matrix(part.X, dtype=np.float32, copy=True)
        genes = rng.choice(part.n_vars, 800, replace=False)
        factor = np.ones(part.n_vars, dtype=np.float32)
        factor[genes[:400]] = 4
        counts = sp.csr_matrix(counts.multiply(factor[None, :]), dtype=np.float32)
        thinned = np.isin(counts.indices, genes[400:])
        counts.data[thinned] = rng.binomial(counts.data[thinned].astype(np.int64), 0.25)
        counts.eliminate_zeros()
        sample_data = _filtered_like(
            counts,
            part.obs_names,
            part.var[["gene_id", "gene_symbol", "feature_types"]].reset_index(drop=True),
            sample,
        )
        sample_data.obs["cell_type"] = part.obs["cell_type"].astype(str).to_numpy()
        paths[sample] = folder / f"{sample}.h5ad"
        sample_data.write_h5ad(paths[sample])
    sheet = {
        f"S{s}": {
            "sample": f"S{s}",
            "condition": "stim" if s % 2 else "ctrl",
            "donor": f"d{s}",
            "batch": f"S{s}",
            "site": f"site{s % 2}",
        }
        for s in range(N_SAMPLES)
    }
    return paths, sheet


@pytest.fixture(scope="session")
def prepared(planted):
    paths, sheet = planted
    return prepare_cohort(paths, sheet=sheet, options={}, qc_options={"mt_prefix": "auto"}, seed=SEED)


@pytest.fixture(scope="session")
def clustered(request, tmp_path_factory, worker_id):
    """`prepared` after integrate_and_cluster, as the workflow passes it on (an h5ad, written once
    per session and read by every xdist worker that needs it: it takes ~50 s to make)."""

    def build(path: Path) -> None:
        adata = request.getfixturevalue("prepared").copy()
        integrate_and_cluster(adata, options={}, seed=SEED, threads=2)
        adata.write_h5ad(path)

    return ad.read_h5ad(shared_run("cohort_clustered.h5ad", build, tmp_path_factory, worker_id))
