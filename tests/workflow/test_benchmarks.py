"""The benchmark cohort builder (benchmarks/make_cohort.py): deterministic, Cell Ranger layout, real
integer counts, and the per-sample effects it claims. No timing is asserted anywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

import make_cohort as mc  # noqa: E402

N_CELLS = 300


@pytest.fixture(scope="module")
def sources():
    return mc.load_sources()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sources):
    out = tmp_path_factory.mktemp("cohort")
    manifest = build(out, 4, seed=0, sources=sources)
    return out, manifest


def build(out: Path, n_samples: int, *, seed: int, sources) -> dict:
    """A cohort of n_samples x N_CELLS from the sources read once per module."""
    return mc.build_cohort(out, n_samples, N_CELLS, seed=seed, log=lambda *a: None, sources=sources)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle["matrix"][key][:] for key in ("data", "indices", "indptr", "shape", "barcodes")}


def _partner_matrix(source, info, values) -> sp.csr_matrix:
    """Row i: values[i] x the counts of cell i's partner (zero for cells without one)."""
    has = np.flatnonzero(info["partners"] >= 0)
    pick = sp.csr_matrix(
        (values[has], (has, info["partners"][has])), shape=(len(info["rows"]), source.counts.shape[0])
    )
    return pick @ source.counts


def source_counts(source, info) -> sp.csr_matrix:
    """Counts of each synthetic cell's source cell plus those of its partner."""
    return sp.csr_matrix(
        source.counts[info["rows"]] + _partner_matrix(source, info, np.ones(len(info["rows"])))
    )


def mixture(source, info) -> sp.csr_matrix:
    """What a cell's counts are drawn from: w x its source cell + (1 - w, or 1 for doublets) x its partner."""
    partner_weight = np.where(info["kind"] == 0, 1.0 - info["weights"], 1.0)
    own = sp.diags(info["weights"]) @ source.counts[info["rows"]]
    return sp.csr_matrix(own + _partner_matrix(source, info, partner_weight))


def test_same_seed_same_files_other_seed_other_files(cohort, sources, tmp_path):
    out, manifest = cohort
    again = build(tmp_path / "again", 4, seed=0, sources=sources)
    other = build(tmp_path / "other", 4, seed=1, sources=sources)
    for sample in manifest["samples"]:
        first = read_arrays(out / "data" / f"{sample['name']}.h5")
        second = read_arrays(tmp_path / "again" / "data" / f"{sample['name']}.h5")
        third = read_arrays(tmp_path / "other" / "data" / f"{sample['name']}.h5")
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
        assert not (len(first["data"]) == len(third["data"]) and np.array_equal(first["data"], third["data"]))
    assert [s["library_scale"] for s in again["samples"]] == [s["library_scale"] for s in manifest["samples"]]
    assert [s["library_scale"] for s in other["samples"]] != [s["library_scale"] for s in manifest["samples"]]


def test_adding_samples_leaves_the_first_ones_unchanged(cohort, sources, tmp_path):
    out, _ = cohort
    build(tmp_path / "two", 2, seed=0, sources=sources)
    # sample 1 is COVID19 from nCoV_PBMC_1 in both cohorts, with its own random stream
    first = read_arrays(out / "data" / "S01_COVID19.h5")
    alone = read_arrays(tmp_path / "two" / "data" / "S01_COVID19.h5")
    for key in first:
        np.testing.assert_array_equal(first[key], alone[key])


def test_cell_ranger_layout_and_integer_counts(cohort, sources):
    out, manifest = cohort
    _, features = sources
    for sample in manifest["samples"]:
        path = out / "data" / f"{sample['name']}.h5"
        with h5py.File(path, "r") as handle:
            group = handle["matrix"]
            assert set(group) >= {"data", "indices", "indptr", "shape", "barcodes", "features"}
            assert set(group["features"]) >= {"id", "name", "feature_type", "genome"}
            n_genes, n_cells = group["shape"][:]
            assert (n_genes, n_cells) == (len(features["id"]), N_CELLS)
            np.testing.assert_array_equal(group["features"]["id"][:], features["id"])
            data = group["data"][:]
            indptr = group["indptr"][:]
            indices = group["indices"][:]
            barcodes = group["barcodes"][:]
        assert np.issubdtype(data.dtype, np.integer)
        assert data.min() >= 1  # no explicit zeros, no negative values
        assert len(indptr) == n_cells + 1 and indptr[-1] == len(data) == sample["nnz"]
        assert indices.min() >= 0 and indices.max() < n_genes
        assert len(set(barcodes)) == n_cells
        # the workflow's own reader accepts it as raw counts
        from sccohort.qc.load import read_sample

        adata = read_sample(path)
        assert adata.shape == (N_CELLS, n_genes)
        assert np.array_equal(adata.X.data, np.round(adata.X.data))


def test_sample_sheet_and_config(cohort):
    out, manifest = cohort
    from sccohort import sheet as sample_sheet

    config = yaml.safe_load((out / "config" / "config.yaml").read_text())
    assert config["samples"] == "config/samples.tsv"
    repo_config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["cohort"] == repo_config["cohort"] and config["qc"] == repo_config["qc"]
    table = sample_sheet.check_sample_sheet(
        sample_sheet.read_sample_sheet(out / "config" / "samples.tsv"), out / "config" / "samples.tsv", out
    )
    assert len(table) == 4
    assert sorted(table["condition"]) == ["COVID19", "COVID19", "Normal", "Normal"]
    assert table["donor"].is_unique
    # each condition's samples come from that condition's real samples
    for sample in manifest["samples"]:
        assert sample["source"] in mc.SOURCES[sample["condition"]]


def test_thinning_never_adds_counts_outside_boosted_genes(sources):
    sources_, features = sources
    gene_index = {g.decode(): i for i, g in enumerate(features["id"])}
    specs = mc.plan_cohort(2, sources_, features, seed=3)
    spec = specs[0]
    source = sources_[spec.source]
    counts, info = mc.simulate_sample(source, spec, 500, gene_index, seed=3)
    assert np.issubdtype(counts.dtype, np.integer)
    boosted = np.zeros(counts.shape[1], dtype=bool)
    boosted[
        [gene_index[g] for g, f in zip(spec.batch_gene_ids, spec.batch_factors, strict=True) if f > 1]
    ] = True
    # a cell holds thinned counts of its source cell and of its partner (neighbour or doublet
    # partner) only: never more than the two have, nothing on genes both lack
    original = source_counts(source, info)[:, ~boosted].toarray()
    new = counts[:, ~boosted].toarray()
    assert (new <= original).all()
    assert not ((original == 0) & (new > 0)).any()
    # good cells mix a source cell with one of its nearest good neighbours; the others do not mix
    good = info["kind"] == 0
    assert (info["partners"][good] != info["rows"][good]).all()
    assert np.isin(info["partners"][good], source.good).all()
    assert ((info["weights"][good] > 0) & (info["weights"][good] < 1)).all()
    assert (info["partners"][info["kind"] == 1] == -1).all() and (info["weights"][~good] == 1).all()


def test_library_scale_and_gene_factors_have_the_stated_size(sources):
    sources_, features = sources
    gene_index = {g.decode(): i for i, g in enumerate(features["id"])}
    source = sources_["Normal_PBMC_5"]
    detected = np.bincount(source.counts.indices, minlength=source.counts.shape[1])
    common = np.flatnonzero(detected >= 0.3 * source.counts.shape[0])
    rng = np.random.default_rng(0)
    genes = rng.permutation(common)
    up, down = genes[:40], genes[40:80]
    spec = mc.SampleSpec(
        name="x",
        condition="Normal",
        donor="d",
        source="Normal_PBMC_5",
        index=0,
        library_scale=0.5,
        batch_gene_ids=[features["id"][g].decode() for g in np.concatenate([up, down])],
        batch_factors=[3.0] * 40 + [0.3] * 40,
    )
    effects = mc.Effects(low_quality_fraction=0.0, doublet_fraction=0.0, cell_jitter=(1.0, 1.0))
    counts, info = mc.simulate_sample(source, spec, 3000, gene_index, seed=0, effects=effects)
    original = mixture(source, info)  # expected counts before thinning and gene factors
    new_sum = np.asarray(counts.sum(axis=0)).ravel().astype(float)
    old_sum = np.asarray(original.sum(axis=0)).ravel().astype(float)
    other = np.setdiff1d(np.arange(counts.shape[1]), np.concatenate([up, down]))
    library = new_sum[other].sum() / old_sum[other].sum()
    assert library == pytest.approx(0.5, rel=0.02)
    assert new_sum[up].sum() / old_sum[up].sum() / library == pytest.approx(3.0, rel=0.05)
    assert new_sum[down].sum() / old_sum[down].sum() / library == pytest.approx(0.3, rel=0.05)


def test_samples_differ_in_depth_and_batch_genes_and_include_qc_work(sources):
    sources_, features = sources
    specs = mc.plan_cohort(8, sources_, features, seed=0)
    assert [s.condition for s in specs] == ["COVID19"] * 4 + ["Normal"] * 4
    assert len({round(s.library_scale, 6) for s in specs}) == 8
    assert all(0.55 <= s.library_scale <= 1.0 for s in specs)
    sets = [set(s.batch_gene_ids) for s in specs]
    assert all(len(s) > 100 for s in sets)
    assert len(sets[0] & sets[1]) < 0.5 * len(sets[0])  # each sample has its own batch genes

    gene_index = {g.decode(): i for i, g in enumerate(features["id"])}
    spec = specs[4]
    source = sources_[spec.source]
    effects = mc.Effects()
    counts, info = mc.simulate_sample(source, spec, 1000, gene_index, seed=0, effects=effects)
    kind = info["kind"]
    assert (kind == 1).sum() == round(effects.low_quality_fraction * 1000)
    assert (kind == 2).sum() == round(effects.doublet_fraction * 1000)
    assert np.isin(info["rows"][kind == 1], source.low).all()
    assert np.isin(info["rows"][kind != 1], source.good).all()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    # doublets carry about twice a singlet's counts; low-quality cells far fewer
    assert np.median(totals[kind == 2]) > 1.5 * np.median(totals[kind == 0])
    assert np.median(totals[kind == 1]) < 0.5 * np.median(totals[kind == 0])


def test_manifest_records_what_was_built(cohort):
    out, manifest = cohort
    stored = json.loads((out / "cohort.json").read_text())
    assert stored["n_cells"] == 4 * N_CELLS
    sheet = pd.read_csv(out / "config" / "samples.tsv", sep="\t")
    assert list(sheet["sample"]) == [s["name"] for s in stored["samples"]]
    assert mc.cohort_is_built(out, 4, N_CELLS, 0)
    assert not mc.cohort_is_built(out, 4, N_CELLS + 1, 0)
    for sample in stored["samples"]:
        with h5py.File(out / "data" / f"{sample['name']}.h5", "r") as handle:
            indptr = handle["matrix"]["indptr"][:]
            data = handle["matrix"]["data"][:]
        totals = np.array([data[a:b].sum() for a, b in zip(indptr[:-1], indptr[1:], strict=True)])
        assert np.median(totals) == pytest.approx(sample["median_counts"])


def test_barcodes_are_distinct_cell_ranger_style():
    barcodes = mc.barcodes_for(5000)
    assert len(set(barcodes)) == 5000
    assert all(len(b) == 18 and b.endswith(b"-1") and set(b[:16]) <= set(b"ACGT") for b in barcodes[:50])


def test_sparse_round_trip(tmp_path, sources):
    _, features = sources
    matrix = sp.random(20, len(features["id"]), density=0.01, format="csr", random_state=0)
    matrix.data = np.ceil(matrix.data * 10)
    mc.write_10x_h5(tmp_path / "x.h5", matrix.astype(np.int32), mc.barcodes_for(20), features)
    counts, barcodes, feats = mc.read_10x_h5(tmp_path / "x.h5")
    assert (counts != matrix.astype(np.int32)).nnz == 0
    np.testing.assert_array_equal(feats["name"], features["name"])


def test_resampled_cells_are_not_clones_of_their_source_cells(sources):
    """6,000 cells from a 1,500-cell source: copies of one real cell must not be each other's only
    neighbours. With plain resampling (each real cell ~4 times, thinned) the kNN graph breaks into
    cliques of copies and Leiden finds hundreds of clusters (1,238 at resolution 0.25 on a 100k
    cohort); with cells mixed between neighbours the graph is one piece with PBMC-like clusters."""
    import anndata as ad
    import scanpy as sc
    from scipy.sparse.csgraph import connected_components

    sources_, features = sources
    gene_index = {g.decode(): i for i, g in enumerate(features["id"])}
    spec = mc.plan_cohort(8, sources_, features, seed=0)[4]
    effects = mc.Effects(low_quality_fraction=0.0, doublet_fraction=0.0)
    counts, info = mc.simulate_sample(sources_[spec.source], spec, 6000, gene_index, seed=0, effects=effects)
    adata = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    sc.tl.pca(adata, n_comps=30, mask_var="highly_variable", random_state=0)
    sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
    n_components, labels = connected_components(adata.obsp["connectivities"])
    assert np.bincount(labels).max() >= 0.99 * adata.n_obs, f"{n_components} graph components"
    sc.tl.leiden(adata, resolution=0.5, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert adata.obs["leiden"].nunique() <= 30
