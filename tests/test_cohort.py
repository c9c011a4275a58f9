"""Tests of the cohort stage (scripts/sccohort/cohort.py, integration_metrics.py, rules in cohort.smk).

Known answers come from real cells with published labels: 1,200 PBMCs of 10x pbmc4k annotated by
the SoupX authors (tests/data/cohort, see PROVENANCE.txt), split into three pseudo-samples with
a strong planted per-sample batch effect (in each sample 800 random genes are multiplied by 4 or
thinned to 25%, seeded). The cell types are the same in every pseudo-sample, so a good
integration must mix the samples and keep the types apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sccohort import cohort  # noqa: E402
from sccohort import integration_metrics as im  # noqa: E402
from sccohort.errors import InputError  # noqa: E402

DATA = Path(__file__).parent / "data" / "cohort" / "pbmc4k_1200cells_4000genes.h5ad"
N_SAMPLES = 3
ARI_THRESHOLD = 0.5  # Leiden (default resolution 0.5) vs the 5 published types; observed ~0.57
SEED = 0


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------
def filtered_like(
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


@pytest.fixture(scope="module")
def pbmc() -> ad.AnnData:
    adata = ad.read_h5ad(DATA)
    adata.var["gene_symbol"] = adata.var_names.astype(str)
    adata.var["gene_id"] = [f"GENE{i:05d}" for i in range(adata.n_vars)]  # ids differ from symbols
    adata.var["feature_types"] = "Gene Expression"
    return adata


@pytest.fixture(scope="module")
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
        sample_data = filtered_like(
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


@pytest.fixture(scope="module")
def prepared(planted):
    paths, sheet = planted
    return cohort.prepare_cohort(paths, sheet, {}, {"mt_prefix": "auto"}, seed=SEED)


@pytest.fixture(scope="module")
def clustered(prepared):
    adata = prepared.copy()
    cohort.integrate_and_cluster(adata, {}, seed=SEED, threads=2)
    return adata


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------
def test_leiden_key_formatting():
    assert [cohort.leiden_key(r) for r in (0.25, 0.5, 1, 1.0, 2, 0.1)] == [
        "leiden_0.25",
        "leiden_0.5",
        "leiden_1.0",
        "leiden_1.0",
        "leiden_2.0",
        "leiden_0.1",
    ]
    with pytest.raises(InputError):
        cohort.leiden_key(0)


def test_defaults_agree_with_schema_and_config():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = schema["properties"]["cohort"]["properties"]
    assert {k: v["default"] for k, v in properties.items()} == cohort.DEFAULTS
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["cohort"]
    assert config == cohort.DEFAULTS


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------
def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.todense()) if sp.issparse(matrix) else np.asarray(matrix)


def test_merge_different_gene_sets_and_colliding_barcodes(pbmc, tmp_path):
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

    inner = cohort.merge_samples(paths, sheet, join="inner", min_gene_overlap=0.5)
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

    outer = cohort.merge_samples(paths, sheet, join="outer", min_gene_overlap=0.5)
    assert outer.shape == (180, 4000)
    absent = outer[outer.obs["sample"] == "A"][:, ~outer.var["gene_id"].isin(genes["gene_id"].iloc[:3000])]
    assert absent.X.nnz == 0  # genes A never measured count zero
    assert int(outer.X.sum()) == int(sum(s.X.sum() for s in sources.values()))
    np.testing.assert_array_equal(outer.var["n_samples"].to_numpy()[:1000], 2)  # genes 0..999: A and C

    # a sample the per-sample stage dropped (qc.failed_sample_policy: drop) is left out
    sources["C"].uns["qc_status"] = {"sample": "C", "dropped": True}
    sources["C"].write_h5ad(paths["C"])
    without_c = cohort.merge_samples(paths, sheet, join="outer")
    assert without_c.n_obs == 100 and set(without_c.obs["sample"]) == {"A", "B_x"}
    assert without_c.uns["cohort_merge"]["dropped_samples"] == ["C"]
    sources["C"].uns["qc_status"]["dropped"] = False
    sources["C"].write_h5ad(paths["C"])

    filtered = cohort.merge_samples(paths, sheet, join="inner", min_cells_per_gene=20)
    detected = np.asarray((inner.X > 0).sum(axis=0)).ravel()
    assert filtered.n_vars == int((detected >= 20).sum())


def test_overlap_too_small_names_the_samples(pbmc, tmp_path):
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
        cohort.merge_samples(paths, join="inner", min_gene_overlap=0.5)
    assert str(error.value).split("come first: ")[1].startswith("mouse: 0%; human")
    with pytest.raises(InputError):
        cohort.merge_samples(paths, join="outer", min_gene_overlap=0.5)
    merged = cohort.merge_samples(paths, join="outer", min_gene_overlap=0)
    assert merged.n_vars == 2 * pbmc.n_vars


def test_merge_rejects_negative_counts(pbmc, tmp_path):
    genes = pbmc.var[["gene_id", "gene_symbol", "feature_types"]].reset_index(drop=True)
    counts = sp.csr_matrix(pbmc.X[:20], dtype=np.float32, copy=True)
    counts.data[0] = -1
    filtered_like(counts, pbmc.obs_names[:20], genes, "bad").write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match="bad.*negative"):
        cohort.merge_samples({"bad": tmp_path / "bad.h5ad"})


# --------------------------------------------------------------------------------------------
# Normalisation, HVG, PCA
# --------------------------------------------------------------------------------------------
def test_prepared_object_contract(prepared, planted):
    adata = prepared
    assert adata.n_obs == 1200
    counts = adata.layers["counts"]
    assert sp.issparse(counts) and sp.issparse(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(counts.data, np.round(counts.data))
    totals = np.asarray(np.expm1(adata.X).sum(axis=1)).ravel()
    np.testing.assert_allclose(totals, 1e4, rtol=1e-3)
    for column in (
        "sample",
        "condition",
        "donor",
        "batch",
        "site",
        "total_counts",
        "pct_counts_mt",
        "doublet_score",
    ):
        assert column in adata.obs
    assert adata.var["highly_variable"].sum() == 2000
    flagged = adata.var["mt"] | adata.var["ribo"]
    assert flagged.sum() > 50 and not (adata.var["highly_variable"] & flagged).any()
    assert adata.obsm["X_pca"].shape == (1200, 50)
    assert adata.uns["cohort"]["parameters"]["n_top_genes"] == 2000
    assert set(adata.uns["qc_thresholds"]) == {"S0", "S1", "S2"}
    again = adata.copy()
    cohort.run_pca(again, 50, scale=False, seed=SEED)
    np.testing.assert_array_equal(again.obsm["X_pca"], adata.obsm["X_pca"])  # seeded, deterministic


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_scanpy_hvg_flavours_respect_exclusion(prepared, flavor):
    adata = prepared.copy()
    flagged = (adata.var["mt"] | adata.var["ribo"]).to_numpy()
    cohort.highly_variable_genes(adata, n_top_genes=500, flavor=flavor, batch_key="sample", exclude=flagged)
    chosen = adata.var["highly_variable"].to_numpy()
    assert chosen.sum() == 500 and not (chosen & flagged).any()
    assert "_hvg_batch" not in adata.obs


def test_seurat_v3_selects_overdispersed_genes():
    """Poisson genes vs negative-binomial genes of the same means: the NB genes are the HVGs."""
    rng = np.random.default_rng(5)
    n_cells, n_genes, n_variable = 1500, 1500, 100
    means = np.exp(rng.uniform(np.log(0.05), np.log(20), n_genes))
    counts = rng.poisson(means[None, :], size=(n_cells, n_genes)).astype(np.float32)
    variable = rng.choice(n_genes, n_variable, replace=False)
    r = 0.5  # NB dispersion: variance = mu + mu^2 / r
    p = r / (r + means[variable])
    counts[:, variable] = rng.negative_binomial(r, p, size=(n_cells, n_variable))
    adata = ad.AnnData(X=sp.csr_matrix(counts))
    adata.layers["counts"] = adata.X.copy()
    adata.obs["sample"] = np.where(np.arange(n_cells) < 700, "a", "b")
    for batch_key in ("sample", None):
        cohort.highly_variable_genes(adata, n_top_genes=n_variable, flavor="seurat_v3", batch_key=batch_key)
        chosen = np.flatnonzero(adata.var["highly_variable"].to_numpy())
        assert len(np.intersect1d(chosen, variable)) >= 0.9 * n_variable
    # excluded genes are never selected, and the rest of the ranking is unchanged
    exclude = np.zeros(n_genes, dtype=bool)
    exclude[variable[:10]] = True
    cohort.highly_variable_genes(
        adata, n_top_genes=n_variable, flavor="seurat_v3", batch_key="sample", exclude=exclude
    )
    assert not adata.var["highly_variable"].to_numpy()[exclude].any()
    assert adata.var["highly_variable"].sum() == n_variable


def test_small_hvg_batches_are_pooled():
    labels = pd.Series(["a"] * 100 + ["b"] * 80 + ["c"] * 20 + ["d"] * 40)
    codes, summary = cohort.hvg_batches(labels, min_cells=50)
    assert summary["pooled"] == ["c", "d"] and summary["n_batches"] == 3
    assert len(set(codes[180:])) == 1 and codes[180] not in (codes[0], codes[100])
    codes, summary = cohort.hvg_batches(pd.Series(["a"] * 100 + ["b"] * 10), min_cells=50)
    assert summary["ignored"] == ["b"] and (codes[100:] == -1).all()
    codes, summary = cohort.hvg_batches(pd.Series(["a"] * 10 + ["b"] * 10), min_cells=50)
    assert codes is None  # everything pooled into one group = no batches


# --------------------------------------------------------------------------------------------
# Integration and clustering on the planted batch effect
# --------------------------------------------------------------------------------------------
def _metrics(adata):
    info = adata.uns["cohort"]
    graphs = {"uncorrected": adata.obsp[f"{info['uncorrected_neighbors_key']}_distances"]}
    if info["integration"] == "harmony":
        graphs["harmony"] = adata.obsp["distances"]
    table, _ = im.integration_metrics(adata.obs, graphs, "sample", info["default_cluster_key"], ["cell_type"])
    return table


def test_harmony_mixes_samples_and_keeps_cell_types_apart(clustered):
    table = _metrics(clustered)
    overall = table[table["cluster"] == "all"].set_index("graph")
    before, after = overall.loc["uncorrected"], overall.loc["harmony"]
    # the planted effect separates the samples completely before integration
    assert before["batch_mixing_ratio"] < 0.15
    assert after["batch_mixing_ratio"] > before["batch_mixing_ratio"] + 0.4
    # known types stay apart: neighbours share the cell's published type as often as before
    assert after["label_purity_cell_type"] >= 0.8
    assert after["label_purity_cell_type"] >= before["label_purity_cell_type"] - 0.02
    per_cluster = table[(table["cluster"] != "all") & (table["n_cells"] >= 30)].pivot(
        index="cluster", columns="graph", values="batch_mixing"
    )
    assert (per_cluster["harmony"] > per_cluster["uncorrected"] + 0.3).all()


def test_leiden_recovers_published_cell_types(clustered):
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    key = cohort.leiden_key(0.5)
    assert clustered.uns["cohort"]["default_cluster_key"] == key
    for res in (0.25, 0.5, 1.0):
        assert cohort.leiden_key(res) in clustered.obs
    truth = clustered.obs["cell_type"].astype(str)
    ari = adjusted_rand_score(truth, clustered.obs[key])
    sc.tl.leiden(
        clustered,
        resolution=0.5,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=SEED,
        neighbors_key=cohort.UNCORRECTED_NEIGHBORS,
        key_added="leiden_uncorrected",
    )
    ari_uncorrected = adjusted_rand_score(truth, clustered.obs["leiden_uncorrected"])
    assert ari >= ARI_THRESHOLD
    assert ari >= ari_uncorrected + 0.15
    # B cells, the most distinct type, form one cluster of their own
    b_cluster = clustered.obs.loc[truth == "B", key].value_counts()
    assert b_cluster.iloc[0] / b_cluster.sum() > 0.95
    assert (clustered.obs[key] == b_cluster.index[0]).sum() < 1.05 * b_cluster.sum()


def test_clustered_object_contract(clustered):
    for key in ("X_pca", "X_pca_harmony", "X_umap", cohort.UNCORRECTED_UMAP):
        assert clustered.obsm[key].shape[0] == clustered.n_obs
    info = clustered.uns["cohort"]
    assert info["integrated_rep"] == "X_pca_harmony"
    assert clustered.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    assert "scanpy" in info["versions"] and "harmonypy" in info["versions"]
    table = cohort.embedding_table(clustered)
    assert list(table.columns[:3]) == ["barcode", "UMAP1", "UMAP2"]
    assert {"sample", "condition", "leiden_0.5"} <= set(table.columns)


def test_integration_none_skips_harmony(prepared):
    adata = prepared.copy()
    cohort.integrate_and_cluster(adata, {"integration": "none", "leiden_resolutions": [0.5]}, seed=SEED)
    assert "X_pca_harmony" not in adata.obsm
    assert adata.uns["cohort"]["integration"] == "none"
    assert adata.uns["neighbors"]["params"]["use_rep"] == "X_pca"
    assert adata.uns["cohort"]["uncorrected_neighbors_key"] == "neighbors"
    assert "leiden_0.5" in adata.obs


def test_harmony_is_seeded_and_skips_single_level_keys(prepared):
    adata = prepared.copy()
    assert cohort.run_harmony(adata, ["sample"], seed=SEED)
    first = adata.obsm["X_pca_harmony"].copy()
    assert cohort.run_harmony(adata, ["sample"], seed=SEED)
    np.testing.assert_array_equal(first, adata.obsm["X_pca_harmony"])
    adata.obs["one"] = "x"
    del adata.obsm["X_pca_harmony"]
    assert not cohort.run_harmony(adata, ["one"], seed=SEED)
    assert "X_pca_harmony" not in adata.obsm


def test_markers_of_known_types(clustered):
    key = cohort.leiden_key(0.5)
    markers = cohort.find_markers(clustered, key, n_genes=25)
    assert set(markers.columns) >= {
        "cluster",
        "rank",
        "gene",
        "gene_id",
        "logfoldchange",
        "pval_adj",
        "pct_in",
    }
    assert markers.groupby("cluster").size().max() == 25
    truth = clustered.obs["cell_type"].astype(str)
    b_cluster = clustered.obs.loc[truth == "B", key].value_counts().index[0]
    b_markers = markers[(markers["cluster"] == str(b_cluster)) & (markers["rank"] <= 10)]["gene"]
    assert {"MS4A1", "CD79A", "CD79B"} & set(b_markers)
    nk_cluster = clustered.obs.loc[truth == "NK", key].value_counts().index[0]
    nk_markers = markers[(markers["cluster"] == str(nk_cluster)) & (markers["rank"] <= 10)]["gene"]
    assert {"NKG7", "GNLY", "GZMB", "PRF1", "CST7", "GZMA"} & set(nk_markers)


def test_detection_by_group_counts_nonzero_cells():
    rng = np.random.default_rng(4)
    matrix = sp.random(53, 17, density=0.3, format="csr", random_state=5, dtype=np.float32)
    matrix.data[::7] = 0  # stored zeros are not detections
    codes = rng.integers(-1, 3, 53)  # -1: a cell in no group
    expected = np.stack([(matrix[codes == g].toarray() != 0).sum(axis=0) for g in range(3)])
    np.testing.assert_array_equal(cohort.detection_by_group(matrix, codes, 3, chunk_rows=10), expected)


def test_markers_min_pct_tests_only_detected_genes_and_keeps_their_statistics(clustered):
    key = cohort.leiden_key(0.5)
    every = cohort.find_markers(clustered, key, n_genes=clustered.n_vars)
    common = cohort.find_markers(clustered, key, n_genes=clustered.n_vars, min_pct=0.1)
    labels = clustered.obs[key]
    fraction = pd.DataFrame(
        {c: (clustered.X[(labels == c).to_numpy()] != 0).mean(axis=0).A1 for c in labels.cat.categories},
        index=clustered.var_names,
    )
    tested = set(common["gene"])
    assert tested == set(fraction.index[(fraction >= 0.1).any(axis=1)])
    assert 0 < len(tested) < clustered.n_vars  # the planted data has rare genes to leave out
    # a gene's Wilcoxon statistics do not depend on which other genes are tested
    merged = every.merge(common, on=["cluster", "gene"], suffixes=("", "_min_pct"))
    assert len(merged) == len(common)
    for column in ("score", "logfoldchange", "pval", "pct_in", "pct_out"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_min_pct"], rtol=1e-6, atol=1e-12)
    # adjusted p-values: Benjamini-Hochberg over the tested genes, per cluster
    from scipy.stats import false_discovery_control

    for _, table in common.groupby("cluster"):
        np.testing.assert_allclose(table["pval_adj"], false_discovery_control(table["pval"]), rtol=1e-6)
    # and the top markers of every cluster are the same genes
    top = lambda t: t[t["rank"] <= 10].groupby("cluster")["gene"].apply(list).to_dict()  # noqa: E731
    assert top(common) == top(every)


def test_markers_have_scanpys_wilcoxon_statistics(clustered):
    """illico's sparse Wilcoxon gives the numbers of scanpy's rank_genes_groups (tie_correct=False)."""
    import scanpy as sc

    key = cohort.leiden_key(0.5)
    ours = cohort.find_markers(clustered, key, n_genes=clustered.n_vars, threads=2)
    reference = clustered.copy()
    sc.tl.rank_genes_groups(
        reference, key, method="wilcoxon", reference="rest", use_raw=False, pts=True, tie_correct=False
    )
    theirs = sc.get.rank_genes_groups_df(reference, group=None)
    theirs["group"] = theirs["group"].astype(str)
    merged = ours.merge(theirs, left_on=["cluster", "gene"], right_on=["group", "names"], validate="1:1")
    assert len(merged) == len(ours) == clustered.n_vars * clustered.obs[key].nunique()
    for mine, scanpys in [
        ("score", "scores"),
        ("logfoldchange", "logfoldchanges"),
        ("pct_in", "pct_nz_group"),
        ("pct_out", "pct_nz_reference"),
    ]:
        np.testing.assert_allclose(merged[mine], merged[scanpys], rtol=1e-4, atol=1e-4, err_msg=mine)
    # p-values and their BH adjustment, compared on the log scale where they are tiny
    for mine, scanpys in [("pval", "pvals"), ("pval_adj", "pvals_adj")]:
        np.testing.assert_allclose(
            np.log10(np.maximum(merged[mine], 1e-300)),
            np.log10(np.maximum(merged[scanpys], 1e-300)),
            atol=1e-3,
            err_msg=mine,
        )
    top = ours[ours["rank"] <= 10].groupby("cluster")["gene"].apply(set).to_dict()
    scanpy_top = {
        str(group): set(reference.uns["rank_genes_groups"]["names"][str(group)][:10])
        for group in clustered.obs[key].cat.categories
    }
    assert top == scanpy_top


def test_read_marker_genes_reads_only_the_tested_genes(clustered, tmp_path):
    key = cohort.leiden_key(0.5)
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    read = cohort.read_marker_genes(path, 0.1, groupby=key, chunk_rows=97)
    restricted = cohort.restrict_to_marker_genes(clustered, key, 0.1)
    assert list(read.var_names) == list(restricted.var_names)
    assert read.n_vars < clustered.n_vars
    assert (read.X != restricted.X).nnz == 0
    pd.testing.assert_frame_equal(read.obs, restricted.obs)
    assert cohort.find_markers(read, key, n_genes=10).equals(
        cohort.find_markers(clustered, key, 10, min_pct=0.1)
    )


# --------------------------------------------------------------------------------------------
# Metrics on constructed neighbourhoods
# --------------------------------------------------------------------------------------------
def _knn_matrix(neighbours: list[list[int]]) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(neighbours)), [len(n) for n in neighbours])
    cols = np.concatenate(neighbours)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(neighbours), len(neighbours)))


def test_batch_mixing_and_purity_known_values():
    # 4 cells of batch a, 4 of batch b. Segregated: neighbours from the own batch only.
    batches = np.array(list("aaaabbbb"))
    segregated = _knn_matrix(
        [[j for j in range(4) if j != i] if i < 4 else [j for j in range(4, 8) if j != i] for i in range(8)]
    )
    knn = im.knn_from_graph(segregated)
    np.testing.assert_allclose(im.batch_mixing(knn, batches), 0)
    # Balanced: each cell's neighbourhood (itself + 3) holds two cells of each batch.
    balanced = [[(i + 1) % 8, (i + 4) % 8, (i + 5) % 8] for i in range(8)]
    labels = np.array(list("abababab"))
    np.testing.assert_allclose(im.batch_mixing(im.knn_from_graph(_knn_matrix(balanced)), labels), 1)
    purity = im.neighbour_purity(knn, batches)
    np.testing.assert_allclose(purity, 1)
    np.testing.assert_allclose(im.neighbour_purity(im.knn_from_graph(_knn_matrix(balanced)), labels), 1 / 3)
    assert np.isnan(im.batch_mixing(knn, np.array(["a"] * 8))).all()


def test_expected_batch_mixing_matches_random_neighbourhoods():
    """The expected score equals the score of kNN neighbourhoods that ignore batch entirely."""
    rng = np.random.default_rng(2)
    n, k = 3000, 15
    batches = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.5, 0.3, 0.2])
    neighbours = [rng.choice(np.delete(np.arange(n), i), k - 1, replace=False) for i in range(n)]
    observed = im.batch_mixing(im.knn_from_graph(_knn_matrix(neighbours)), batches).mean()
    composition = pd.Series(batches).value_counts().to_numpy()
    assert abs(im.expected_batch_mixing(composition, k, 3) - observed) < 0.01
    assert abs(im.expected_batch_mixing([0.5, 0.3, 0.2], k, 3) - observed) < 0.01
    assert im.expected_batch_mixing([100, 0, 0], k, 3) == 0


def test_integration_metrics_table_shape(clustered):
    table = _metrics(clustered)
    n_clusters = clustered.obs["leiden_0.5"].nunique()
    assert len(table) == 2 * (n_clusters + 1)
    assert set(table["graph"]) == {"uncorrected", "harmony"}
    assert (table.groupby("graph")["n_cells"].max() == clustered.n_obs).all()
    assert table["batch_mixing"].between(0, 1).all() and table["cluster_purity"].between(0, 1).all()


# --------------------------------------------------------------------------------------------
# The rules, on the bundled example's cells (slow: whole per-sample and cohort stages)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cohort_rules_end_to_end(full_run):
    # The shared whole-workflow run (conftest.full_run: 4 bundled samples x 400 cells, default config).
    project = full_run
    adata = cohort.read_cohort(
        project / "results/cohort/clustered.h5ad", parts=("obs", "obsm", "uns", "layers")
    )
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


def test_uncorrected_embedding_in_its_own_job_equals_the_one_job_result(prepared, clustered):
    """cohort_uncorrected + cohort_cluster (uncorrected=False) give what one job computed before."""
    split = prepared.copy()
    cohort.integrate_and_cluster(split, {}, seed=SEED, threads=2, uncorrected=False)
    assert cohort.UNCORRECTED_UMAP not in split.obsm
    assert f"{cohort.UNCORRECTED_NEIGHBORS}_distances" not in split.obsp
    # what cohort_uncorrected works on: the cell names and the PCs only
    alone = ad.AnnData(obs=pd.DataFrame(index=prepared.obs_names), obsm={"X_pca": prepared.obsm["X_pca"]})
    cohort.embed_uncorrected(alone, {}, seed=SEED)
    cohort.add_uncorrected(split, alone)
    np.testing.assert_array_equal(
        split.obsm[cohort.UNCORRECTED_UMAP], clustered.obsm[cohort.UNCORRECTED_UMAP]
    )
    for suffix in ("distances", "connectivities"):
        key = f"{cohort.UNCORRECTED_NEIGHBORS}_{suffix}"
        assert (split.obsp[key] != clustered.obsp[key]).nnz == 0
    np.testing.assert_array_equal(split.obsm["X_umap"], clustered.obsm["X_umap"])
    for key in clustered.uns["cohort"]["leiden_keys"]:
        assert (split.obs[key] == clustered.obs[key]).all()
    # an embedding of other cells (e.g. a stale file after a rerun of the merge) is refused
    with pytest.raises(InputError, match="cohort_uncorrected"):
        cohort.add_uncorrected(split, alone[::-1].copy())


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

    light = cohort.read_cohort(tmp_path / "pca.h5ad", parts=("obs", "var", "obsm", "uns"))
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


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_gene_columns_read_in_chunks_equal_the_matrix(tmp_path, dense):
    matrix = sp.random(57, 20, density=0.3, format="csr", random_state=3, dtype=np.float32)
    adata = ad.AnnData(X=matrix.toarray() if dense else matrix)
    adata.var_names = [f"g{i}" for i in range(20)]
    adata.write_h5ad(tmp_path / "x.h5ad")
    genes = ["g7", "g2", "g19", "g0"]
    columns = cohort.read_gene_columns(tmp_path / "x.h5ad", genes, chunk_rows=10)
    assert columns.shape == (57, 4)
    np.testing.assert_array_equal(columns.toarray(), matrix[:, [7, 2, 19, 0]].toarray())
    with pytest.raises(InputError, match="nope"):
        cohort.read_gene_columns(tmp_path / "x.h5ad", ["g1", "nope"])
