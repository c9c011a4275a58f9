"""Tests of the cohort stage's entry functions (sccohort.cohort.rules) and of its rules in the
workflow (cohort.smk; slow: the whole per-sample and cohort stages)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sccohort.cohort import (
    cohort_cluster,
    cohort_diagnostics,
    cohort_markers,
    cohort_merge,
    cohort_uncorrected,
)
from sccohort.h5ad import read_parts

SEED = 0
LOG = logging.getLogger("sccohort")


def test_entry_functions_write_what_the_functions_compute(planted, prepared, clustered, tmp_path):
    """The five rules' entry functions, chained as the workflow runs them, on the planted cohort."""
    paths, sheet = planted
    out = tmp_path / "cohort"
    cohort_merge(
        samples=list(paths),
        h5ads=[str(p) for p in paths.values()],
        output=out / "pca.h5ad",
        summary=out / "merge_summary.tsv",
        sheet=sheet,
        cohort_options={},
        qc_options={"mt_prefix": "auto"},
        seed=SEED,
        log=LOG,
    )
    pca = ad.read_h5ad(out / "pca.h5ad")
    np.testing.assert_array_equal(pca.obsm["X_pca"], prepared.obsm["X_pca"])
    pd.testing.assert_frame_equal(pca.obs, prepared.obs)
    summary = pd.read_csv(out / "merge_summary.tsv", sep="\t")
    assert list(summary["sample"]) == list(paths) and not summary["dropped_by_qc"].any()
    assert summary["n_cells"].sum() == prepared.n_obs

    common = {"cohort_options": {}, "seed": SEED, "log": LOG}
    cohort_cluster(
        pca_h5ad=out / "pca.h5ad",
        output=out / "clustered.h5ad",
        umap_table=out / "umap.tsv.gz",
        threads=2,
        **common,
    )
    cohort_uncorrected(pca_h5ad=out / "pca.h5ad", output=out / "uncorrected.h5ad", **common)
    result = read_parts(out / "clustered.h5ad", parts=("obs", "obsm", "uns"))
    for key in clustered.uns["cohort"]["leiden_keys"]:
        assert (result.obs[key] == clustered.obs[key]).all()
    np.testing.assert_array_equal(result.obsm["X_umap"], clustered.obsm["X_umap"])
    assert len(pd.read_csv(out / "umap.tsv.gz", sep="\t")) == clustered.n_obs

    figures = {
        name: out / "figures" / f"{name}.png"
        for name in ("metrics_plot", "before_after", "by_sample", "by_batch", "by_condition", "by_cluster")
    }
    cohort_diagnostics(
        clustered_h5ad=out / "clustered.h5ad",
        uncorrected_h5ad=out / "uncorrected.h5ad",
        umap_pca=out / "umap_pca.tsv.gz",
        metrics=out / "integration_metrics.tsv",
        **figures,
        **common,
    )
    metrics = pd.read_csv(out / "integration_metrics.tsv", sep="\t", dtype={"cluster": str})
    assert set(metrics["graph"]) == {"uncorrected", "harmony"}
    # labels independent of the corrected graph (Leiden on the uncorrected graph) and the scIB
    # metrics, cohort-wide on the "all" rows
    overall = metrics[metrics["cluster"] == "all"].set_index("graph")
    assert overall["label_purity_leiden_uncorrected"].between(0, 1).all()
    for column in (
        "scib_ilisi",
        "scib_kbet",
        "scib_silhouette_batch",
        "scib_graph_connectivity_leiden_uncorrected",
    ):
        assert overall[column].between(0, 1).all(), column
    assert overall.loc["harmony", "scib_ilisi"] > overall.loc["uncorrected", "scib_ilisi"]
    assert metrics.loc[metrics["cluster"] != "all", "scib_ilisi"].isna().all()
    umap_pca = pd.read_csv(out / "umap_pca.tsv.gz", sep="\t")
    np.testing.assert_allclose(umap_pca[["UMAP1", "UMAP2"]], clustered.obsm["X_umap_pca"], rtol=1e-6)

    cohort_markers(
        clustered_h5ad=out / "clustered.h5ad",
        markers=out / "markers.tsv",
        dotplot=out / "figures" / "marker_dotplot.png",
        cohort_options={},
        threads=2,
        log=LOG,
    )
    markers = pd.read_csv(out / "markers.tsv", sep="\t", dtype={"cluster": str})
    assert markers.groupby("cluster").size().max() == 25
    assert set(markers["cluster"]) == set(clustered.obs["leiden_0.5"].astype(str))
    for path in [*figures.values(), out / "figures" / "marker_dotplot.png"]:
        assert path.stat().st_size > 10_000


def test_one_sample_cohort_runs_the_diagnostics_on_its_one_graph(planted, tmp_path):
    """A one-sample pilot: Harmony is skipped (one batch), as with cohort.integration none, so there
    is no uncorrected graph of its own; the diagnostics use the graph the clustering made."""
    paths, sheet = planted
    out = tmp_path / "cohort"
    common = {
        "cohort_options": {"leiden_resolutions": [0.5]},
        "seed": SEED,
        "log": LOG,
    }
    cohort_merge(
        samples=["S0"],
        h5ads=[str(paths["S0"])],
        output=out / "pca.h5ad",
        summary=out / "merge_summary.tsv",
        sheet={"S0": sheet["S0"]},
        qc_options={"mt_prefix": "auto", "min_samples_kept": 1},
        **common,
    )
    cohort_cluster(
        pca_h5ad=out / "pca.h5ad",
        output=out / "clustered.h5ad",
        umap_table=out / "umap.tsv.gz",
        threads=1,
        **common,
    )
    figures = {
        name: out / "figures" / f"{name}.png"
        for name in ("metrics_plot", "before_after", "by_sample", "by_batch", "by_condition", "by_cluster")
    }
    cohort_diagnostics(
        clustered_h5ad=out / "clustered.h5ad",
        uncorrected_h5ad=None,
        umap_pca=out / "umap_pca.tsv.gz",
        metrics=out / "integration_metrics.tsv",
        **figures,
        **common,
    )
    metrics = pd.read_csv(out / "integration_metrics.tsv", sep="\t", dtype={"cluster": str})
    assert set(metrics["graph"]) == {"uncorrected"} and "all" in set(metrics["cluster"])
    assert all(path.stat().st_size > 10_000 for path in figures.values())


def test_h5ad_update_keeps_matrices_and_replaces_annotations(tmp_path):
    """cohort_cluster's output: X, layers and var copied from disk, obs/obsm/obsp/uns from the job."""
    from sccohort.runtime import write_h5ad, write_h5ad_update

    rng = np.random.default_rng(0)
    counts = sp.random(60, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    source = ad.AnnData(X=counts.copy(), obs=pd.DataFrame(index=[f"c{i}" for i in range(60)]))
    source.layers["counts"] = counts * 3
    source.obsm["X_pca"] = rng.normal(size=(60, 5)).astype(np.float32)
    source.uns["cohort"] = {"seed": 0}
    write_h5ad(source, tmp_path / "pca.h5ad")

    light = read_parts(tmp_path / "pca.h5ad", parts=("obs", "var", "obsm", "uns"))
    assert light.X is None and not light.layers
    light.obs["leiden_0.5"] = pd.Categorical(rng.integers(0, 3, 60).astype(str))
    light.obsm["X_umap"] = rng.normal(size=(60, 2))
    light.obsp["connectivities"] = sp.random(60, 60, density=0.05, format="csr", random_state=2)
    light.uns["cohort"] = {"seed": 0, "leiden_keys": ["leiden_0.5"]}
    write_h5ad_update(tmp_path / "pca.h5ad", light, tmp_path / "clustered.h5ad")

    result = ad.read_h5ad(tmp_path / "clustered.h5ad")
    assert (result.X != source.X).nnz == 0 and (result.layers["counts"] != source.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(result.obs, light.obs)
    np.testing.assert_array_equal(result.obsm["X_umap"], light.obsm["X_umap"])
    np.testing.assert_array_equal(result.obsm["X_pca"], source.obsm["X_pca"])
    assert (result.obsp["connectivities"] != light.obsp["connectivities"]).nnz == 0
    assert list(result.uns["cohort"]["leiden_keys"]) == ["leiden_0.5"]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.slow
def test_cohort_rules_end_to_end(full_run):
    # The shared whole-workflow run (conftest.full_run: 4 bundled samples x 400 cells, default config).
    project = full_run
    adata = read_parts(project / "results/cohort/clustered.h5ad", parts=("obs", "obsm", "uns", "layers"))
    sheet = pd.read_csv(project / "config/samples.tsv", sep="\t")
    assert set(adata.obs["sample"]) == set(sheet["sample"])
    assert {"sample", "condition", "donor", "batch", "doublet_score", "pct_counts_mt", "leiden_0.5"} <= set(
        adata.obs
    )
    assert {"X_pca", "X_pca_harmony", "X_umap"} <= set(adata.obsm)
    assert adata.obs_names.is_unique
    metrics = pd.read_csv(project / "results/cohort/integration_metrics.tsv", sep="\t")
    overall = metrics[metrics["cluster"] == "all"].set_index("graph")
    assert overall.loc["harmony", "batch_mixing"] >= overall.loc["uncorrected", "batch_mixing"]
    umap = pd.read_csv(project / "results/cohort/umap_coords.tsv.gz", sep="\t")
    assert len(umap) == adata.n_obs and umap["barcode"].is_unique
    for figure in ("umap_sample", "umap_before_after_integration", "marker_dotplot"):
        assert (project / "results/cohort/figures" / f"{figure}.png").stat().st_size > 10_000
