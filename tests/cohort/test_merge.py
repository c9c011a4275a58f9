"""Tests of the merge (sccohort.cohort.merge, .genes) and of the cohort config block's defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from sccohort.cohort.merge import merge_samples
from sccohort.cohort.options import DEFAULTS
from sccohort.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_agree_with_schema_and_config():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["cohort"]["properties"]
    assert {k: v["default"] for k, v in properties.items()} == DEFAULTS
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["cohort"]
    assert config == DEFAULTS


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense()) if sp.issparse(matrix) else np.asarray(matrix)


def test_merge_different_gene_sets_and_colliding_barcodes(pbmc, filtered_like, tmp_path):
    rng = np.random.default_rng(3)
    genes = pbmc.var[["gene_id", "gene_symbol", "feature_types"]].reset_index(drop=True)
    cells = [np.arange(0, 60), np.arange(60, 100), np.arange(100, 180)]
    gene_sets = [
        np.arange(0, 3000),  # A: first 3000 genes
        rng.permutation(np.arange(1000, 4000)),  # B: last 3000, in another order
        np.arange(0, 4000),  # C: all
    ]
    barcodes = [f"AAAC-{i}" for i in range(80)]  # every sample reuses the same barcodes
    paths, sources = {}, {}
    for name, rows, cols in zip(("A", "B_x", "C"), cells, gene_sets, strict=True):
        counts = sp.csr_matrix(pbmc.X[rows][:, cols])
        sample = filtered_like(counts, barcodes[: len(rows)], genes.iloc[cols].reset_index(drop=True), name)
        paths[name] = tmp_path / f"{name}.h5ad"
        sample.write_h5ad(paths[name])
        sources[name] = sample
    sheet = {
        s: {"sample": s, "condition": "c", "donor": f"d_{s}", "batch": "b1", "site": f"site_{s}"}
        for s in paths
    }

    inner = merge_samples(paths, sheet=sheet, join="inner", min_gene_overlap=0.5)
    assert inner.shape == (180, 2000)  # genes 1000..2999 are in every sample
    assert inner.obs_names.is_unique
    assert inner.obs_names[0] == "A_AAAC-0" and inner.obs_names[60] == "B_x_AAAC-0"
    assert list(inner.obs["sample"].cat.categories) == ["A", "B_x", "C"]
    assert (inner.obs.loc[inner.obs["sample"] == "C", "site"] == "site_C").all()
    assert inner.obs["barcode"].iloc[60] == "AAAC-0"
    assert set(inner.var["gene_id"]) == set(genes["gene_id"].iloc[1000:3000])
    assert sp.isspmatrix_csr(inner.X) and inner.X.dtype == np.float32 and inner.X.has_sorted_indices
    # every value lands in the right cell and gene, whatever the sample's gene order
    for name, sample in sources.items():
        merged = inner[inner.obs["sample"] == name]
        expected = sample[:, sample.var["gene_id"].isin(inner.var["gene_id"])]
        expected = expected[:, pd.Index(expected.var["gene_id"]).get_indexer(inner.var["gene_id"])]
        np.testing.assert_array_equal(_dense(merged.X), _dense(expected.X))
    assert inner.uns["cohort_merge"]["n_genes_dropped_by_join"] == 2000

    outer = merge_samples(paths, sheet=sheet, join="outer", min_gene_overlap=0.5)
    assert outer.shape == (180, 4000)
    absent = outer[outer.obs["sample"] == "A"][:, ~outer.var["gene_id"].isin(genes["gene_id"].iloc[:3000])]
    assert absent.X.nnz == 0  # genes A never measured count zero
    assert int(outer.X.sum()) == int(sum(s.X.sum() for s in sources.values()))
    np.testing.assert_array_equal(outer.var["n_samples"].to_numpy()[:1000], 2)  # genes 0..999: A and C

    # a sample the per-sample stage dropped (qc.failed_sample_policy: drop) is left out
    sources["C"].uns["qc_status"] = {"sample": "C", "dropped": True}
    sources["C"].write_h5ad(paths["C"])
    without_c = merge_samples(paths, sheet=sheet, join="outer")
    assert without_c.n_obs == 100 and set(without_c.obs["sample"]) == {"A", "B_x"}
    assert without_c.uns["cohort_merge"]["dropped_samples"] == ["C"]
    sources["C"].uns["qc_status"]["dropped"] = False
    sources["C"].write_h5ad(paths["C"])

    filtered = merge_samples(paths, sheet=sheet, join="inner", min_cells_per_gene=20)
    detected = np.asarray((inner.X > 0).sum(axis=0)).ravel()
    assert filtered.n_vars == int((detected >= 20).sum())


def test_overlap_too_small_names_the_samples(pbmc, filtered_like, tmp_path):
    genes = pbmc.var[["gene_id", "gene_symbol", "feature_types"]].reset_index(drop=True)
    paths = {}
    for name, rows in (("human1", slice(0, 50)), ("human2", slice(50, 100)), ("mouse", slice(100, 150))):
        these = genes.copy()
        if name == "mouse":
            these["gene_id"] = "ENSMUSG" + these["gene_id"]
            these["gene_symbol"] = these["gene_symbol"].str.capitalize()
        sample = filtered_like(pbmc.X[rows], pbmc.obs_names[rows], these, name)
        paths[name] = tmp_path / f"{name}.h5ad"
        sample.write_h5ad(paths[name])
    with pytest.raises(InputError, match=r"share only 0 genes.*mouse: 0%") as error:
        merge_samples(paths, join="inner", min_gene_overlap=0.5)
    assert str(error.value).split("come first: ")[1].startswith("mouse: 0%; human")
    with pytest.raises(InputError):
        merge_samples(paths, join="outer", min_gene_overlap=0.5)
    merged = merge_samples(paths, join="outer", min_gene_overlap=0)
    assert merged.n_vars == 2 * pbmc.n_vars


def test_merge_rejects_negative_counts(pbmc, filtered_like, tmp_path):
    genes = pbmc.var[["gene_id", "gene_symbol", "feature_types"]].reset_index(drop=True)
    counts = sp.csr_matrix(pbmc.X[:20], dtype=np.float32, copy=True)
    counts.data[0] = -1
    filtered_like(counts, pbmc.obs_names[:20], genes, "bad").write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match="bad.*negative"):
        merge_samples({"bad": tmp_path / "bad.h5ad"})
