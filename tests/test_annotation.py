"""Annotation stage: marker scores, cluster labels with a confidence margin, Unknown for cells
matching no marker set, CellTypist model application, reference label transfer, composition.

All data are real cells with published labels, vendored under tests/data/annotation (see its
PROVENANCE.md): Kang et al. 2018 PBMC (control + IFN-beta), 10x pbmc4k with the SoupX authors'
annotation, and three lung adenocarcinoma cell lines (CellBench, CEL-seq2) planted among the PBMC.
Clusters are computed here (HVG -> PCA -> exact kNN -> Leiden, seeded); no label is hard-coded.
"""

from __future__ import annotations

import pickle
import shutil
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

from sccohort import annotate  # noqa: E402
from sccohort.errors import InputError  # noqa: E402

DATA = REPO / "tests" / "data" / "annotation"
MARKERS = REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv"
RESOLUTION = 0.5
KEY = annotate.cluster_key_for(RESOLUTION)

# Published labels -> major types; each major type accepts the marker labels listed (a parent
# label such as T counts for all of its children).
KANG_MAJOR = {
    "CD4 T cells": "T",
    "CD8 T cells": "T",
    "NK cells": "NK",
    "B cells": "B",
    "CD14+ Monocytes": "Mono",
    "FCGR3A+ Monocytes": "Mono",
    "Dendritic cells": "DC",
    "Megakaryocytes": "Platelet",
}
SOUPX_MAJOR = {"T_CD4": "T", "T_CD8": "T", "NK": "NK", "B": "B", "MNP": "Myeloid"}
MARKER_MAJOR = {
    "CD4_T": "T",
    "CD8_T": "T",
    "T": "T",
    "NK": "NK",
    "B": "B",
    "Plasma": "B",
    "CD14_Mono": "Mono",
    "FCGR3A_Mono": "Mono",
    "Mono": "Mono",
    "cDC": "DC",
    "pDC": "DC",
    "DC": "DC",
    "Platelet": "Platelet",
    "Erythrocyte": "Erythrocyte",
}


def cluster(adata: ad.AnnData, resolution: float = RESOLUTION, seed: int = 0, n_pcs: int = 20, k: int = 15):
    """Log-normalise (library size over all genes of the source: obs total_counts), then the
    usual HVG -> scaled PCA -> kNN graph -> Leiden; writes X, layers['counts'], obsm['X_pca'] and
    obs[leiden_<res>]. Exact kNN (sklearn) keeps the test free of numba compilation."""
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import kneighbors_graph

    adata.layers["counts"] = adata.X.copy()
    adata.X = annotate.lognormalise(adata.X, adata.obs["total_counts"].to_numpy())
    mean, sd = annotate._mean_sd(adata.X)
    dispersion = np.divide(sd**2, mean, out=np.zeros_like(mean), where=mean > 0.01)
    hvg = np.argsort(-dispersion)[:1000]
    scaled = adata.X[:, hvg].toarray()
    scaled = np.clip((scaled - scaled.mean(0)) / np.maximum(scaled.std(0), 1e-8), None, 10)
    adata.obsm["X_pca"] = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit_transform(
        scaled
    )
    graph = kneighbors_graph(adata.obsm["X_pca"], k, mode="connectivity")
    graph = sp.csr_matrix(((graph + graph.T) > 0).astype(np.float64))
    key = annotate.cluster_key_for(resolution)
    sc.tl.leiden(
        adata,
        resolution=resolution,
        adjacency=graph,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
        key_added=key,
    )
    return adata


def read(name: str, label_column: str) -> ad.AnnData:
    adata = ad.read_h5ad(DATA / name)
    adata.obs["published"] = adata.obs.pop(label_column).astype(str).replace("nan", np.nan)
    return adata


@pytest.fixture(scope="module")
def markers() -> pd.DataFrame:
    return annotate.read_marker_table(MARKERS)


@pytest.fixture(scope="module")
def pbmc4k(markers):
    """pbmc4k cells (SoupX labels) plus 120 lung adenocarcinoma cells, clustered and annotated."""
    adata = cluster(read("pbmc4k_with_cell_lines.h5ad", "published"))
    table, missing = annotate.annotate_markers(adata, markers, KEY, marker_path=MARKERS)
    return adata, table, missing


@pytest.fixture(scope="module")
def kang(markers):
    """Kang 2018: 1,000 control + 1,000 IFN-beta cells (labels for control), clustered and annotated."""
    adata = cluster(read("kang_pbmc_ctrl_stim.h5ad", "cell_type"))
    table, missing = annotate.annotate_markers(adata, markers, KEY, marker_path=MARKERS)
    return adata, table, missing


@pytest.fixture(scope="module")
def kang_query():
    """Kang donors 101 and 107 (control and IFN-beta, published labels), clustered."""
    return cluster(read("kang_query_2donors.h5ad", "cell_type"))


def major_accuracy(published: pd.Series, labels: pd.Series, published_major: dict) -> float:
    truth = published.map(published_major)
    called = labels.astype(str).map(MARKER_MAJOR)  # Unknown -> NaN -> counts as wrong
    keep = truth.notna()
    return float((called[keep] == truth[keep]).mean())


# --------------------------------------------------------------------------------------------
# The shipped marker table
# --------------------------------------------------------------------------------------------
def test_shipped_marker_table_covers_pbmc_types_with_sources(markers):
    required = {"CD14_Mono", "FCGR3A_Mono", "B", "Plasma", "NK", "CD4_T", "CD8_T", "cDC", "pDC", "Platelet"}
    assert required <= set(markers["cell_type"])
    positives = markers.loc[markers["weight"] > 0].groupby("cell_type")["gene"].nunique()
    assert (positives >= 3).all(), positives
    assert markers["source"].str.len().gt(0).all()
    assert annotate.parents_of(markers) == {
        "CD14_Mono": "Mono",
        "FCGR3A_Mono": "Mono",
        "CD4_T": "T",
        "CD8_T": "T",
        "cDC": "DC",
        "pDC": "DC",
    }
    # The README names the sources used in the table.
    readme = (MARKERS.parent / "README.md").read_text()
    for source in ("PanglaoDB", "Azimuth", "Seurat", "scanpy"):
        assert source in readme


# --------------------------------------------------------------------------------------------
# Accuracy against published labels
# --------------------------------------------------------------------------------------------
def test_pbmc4k_major_type_accuracy(pbmc4k):
    """SoupX authors' labels of 10x pbmc4k: >= 85% of the labelled PBMC cells get the right major
    type (Unknown counts as wrong; MNP = mononuclear phagocytes, i.e. monocytes or DCs). Most of
    the rest is a cluster the authors call NK that expresses CD3D/CD3E/CD8A and GZMK (effector CD8
    T cells by their markers)."""
    adata, table, _ = pbmc4k
    labelled = adata.obs["published"].isin(SOUPX_MAJOR)
    truth = adata.obs.loc[labelled, "published"].map(SOUPX_MAJOR)
    called = (
        adata.obs.loc[labelled, "cell_type"]
        .astype(str)
        .map(MARKER_MAJOR)
        .replace({"Mono": "Myeloid", "DC": "Myeloid"})
    )
    accuracy = float((truth == called).mean())
    assert accuracy >= 0.85, (accuracy, pd.crosstab(adata.obs["published"], adata.obs["cell_type"]))
    for published in ("T_CD4", "B", "MNP"):
        cells = truth.index[truth == SOUPX_MAJOR[published]]
        assert (called[cells] == truth[cells]).mean() >= 0.95, published
    # Each assigned cluster is backed by its cells: most of them have the cluster's type as their best.
    assigned = table.loc[table["reason"] == "assigned"]
    assert (assigned["cell_agreement"] >= 0.5).all(), assigned


def test_kang_major_type_accuracy(kang):
    """Kang 2018 control cells (published types; shallow 3' v1 data, 9,015 genes): >= 80% get the
    right major type, clustered together with 1,000 IFN-beta-stimulated cells."""
    adata, table, _ = kang
    labelled = adata.obs["published"].notna()
    accuracy = major_accuracy(
        adata.obs.loc[labelled, "published"], adata.obs.loc[labelled, "cell_type"], KANG_MAJOR
    )
    assert accuracy >= 0.80, (accuracy, pd.crosstab(adata.obs["published"], adata.obs["cell_type"]))
    # B cells, CD14 monocytes and NK cells are unambiguous: >= 90% each at the exact type.
    exact = {"B cells": "B", "CD14+ Monocytes": "CD14_Mono", "NK cells": "NK"}
    for published, label in exact.items():
        cells = adata.obs["published"] == published
        share = float((adata.obs.loc[cells, "cell_type"] == label).mean())
        assert share >= 0.9, (published, share)


def test_cells_matching_no_marker_set_are_unknown(pbmc4k):
    """Three lung adenocarcinoma cell lines planted among PBMC form their own clusters; every such
    cluster is Unknown (its best score is below min_score), while no PBMC cluster is."""
    adata, table, _ = pbmc4k
    lines = adata.obs["source"] != "pbmc4k"
    share_lines = lines.groupby(adata.obs[KEY], observed=True).mean()
    line_clusters = set(share_lines.index[share_lines >= 0.9].astype(str))
    assert line_clusters, "the cell lines did not form their own clusters"
    by_cluster = table.set_index("cluster")
    assert (by_cluster.loc[sorted(line_clusters), "label"] == annotate.UNKNOWN).all(), by_cluster
    assert by_cluster.loc[sorted(line_clusters), "reason"].str.contains("min_score").all()
    assert (adata.obs.loc[lines, "cell_type"] == annotate.UNKNOWN).mean() >= 0.95
    pbmc_clusters = set(share_lines.index[share_lines < 0.1].astype(str))
    assert (by_cluster.loc[sorted(pbmc_clusters), "label"] != annotate.UNKNOWN).all(), by_cluster


def test_outputs_in_obs_and_confidence_is_cluster_margin(pbmc4k, markers):
    adata, table, _ = pbmc4k
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    for cell_type in markers["cell_type"].unique():
        assert adata.obs[annotate.score_column(cell_type)].dtype == np.float32
    # The cluster score is the mean of its cells' scores; the confidence is the cluster margin.
    cells = adata.obs[KEY].astype(str) == table["cluster"].iloc[0]
    best = table["best_type"].iloc[0]
    assert adata.obs.loc[cells, annotate.score_column(best)].mean() == pytest.approx(
        table["score"].iloc[0], abs=1e-5
    )
    assert np.allclose(adata.obs.loc[cells, "cell_type_confidence"], table["margin"].iloc[0], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Scoring and assignment rules
# --------------------------------------------------------------------------------------------
def test_margin_parent_and_unknown_rules():
    """assign_clusters on score tables with a known answer: a clear winner, a tie between two
    children of one parent (-> parent), a tie across parents (-> Unknown), and a low best score."""
    clusters = pd.Series(np.repeat(["0", "1", "2", "3"], 5))
    rows = {
        "0": {"CD4_T": 1.0, "CD8_T": 0.2, "NK": 0.1},
        "1": {"CD4_T": 0.60, "CD8_T": 0.55, "NK": 0.1},
        "2": {"CD4_T": 0.1, "CD8_T": 0.55, "NK": 0.50},
        "3": {"CD4_T": 0.05, "CD8_T": 0.0, "NK": -0.3},
    }
    scores = pd.DataFrame([rows[c] for c in clusters], index=[f"c{i}" for i in range(20)])
    parents = {"CD4_T": "T", "CD8_T": "T"}
    table = annotate.assign_clusters(scores, clusters.set_axis(scores.index), 0.1, 0.1, parents).set_index(
        "cluster"
    )
    assert table.loc["0", "label"] == "CD4_T"
    assert table.loc["0", "margin"] == pytest.approx(0.8)
    assert table.loc["1", "label"] == "T"
    assert table.loc["2", "label"] == annotate.UNKNOWN
    assert table.loc["3", "label"] == annotate.UNKNOWN and "min_score" in table.loc["3", "reason"]
    # Without parents the tie in cluster 1 is Unknown too.
    table = annotate.assign_clusters(scores, clusters.set_axis(scores.index), 0.1, 0.1).set_index("cluster")
    assert table.loc["1", "label"] == annotate.UNKNOWN


def test_negative_markers_only_penalise_expressing_cells(kang):
    """A negative marker lowers the score of cells that express it, and does nothing for cells
    that do not (their absence of an NK gene is no evidence for a monocyte type)."""
    adata, _, _ = kang
    base = pd.DataFrame({"cell_type": ["X", "X"], "gene": ["LYZ", "CD14"], "weight": [1.0, 1.0]})
    with_negative = pd.concat([base, pd.DataFrame({"cell_type": ["X"], "gene": ["NKG7"], "weight": [-1.0]})])
    plain, _ = annotate.score_cells(adata, base)
    penalised, _ = annotate.score_cells(adata, with_negative)
    z, _ = annotate.marker_zscores(adata, ["NKG7"])
    expressing = z[:, 0] > 0
    assert np.allclose(plain["X"][~expressing], penalised["X"][~expressing])
    assert np.all(penalised["X"][expressing] < plain["X"][expressing])
    assert np.allclose(plain["X"][expressing] - penalised["X"][expressing], z[expressing, 0] / 2, atol=1e-5)


def test_missing_marker_genes_are_reported_not_fatal(kang, markers, tmp_path):
    """Genes absent from the data are listed (and a type with no gene left scores 0), the run
    goes on, and the other clusters keep their labels."""
    adata, table, _ = kang
    extra = pd.DataFrame(
        {
            "cell_type": ["B", "B", "Ghost", "Ghost"],
            "gene": ["NOT_A_GENE_1", "NOT_A_GENE_2", "NOT_A_GENE_3", "NOT_A_GENE_4"],
            "weight": [0.1, 0.1, 1.0, 1.0],
        }
    )
    bigger = pd.concat([markers[["cell_type", "gene", "weight", "parent"]], extra], ignore_index=True).fillna(
        ""
    )
    path = tmp_path / "markers_with_missing.tsv"
    bigger.to_csv(path, sep="\t", index=False)
    copy = adata.copy()
    table2, missing = annotate.annotate_markers(copy, annotate.read_marker_table(path), KEY, marker_path=path)
    absent = missing.loc[missing["status"] == "absent from data", "gene"]
    assert {"NOT_A_GENE_1", "NOT_A_GENE_2", "NOT_A_GENE_3", "NOT_A_GENE_4"} <= set(absent)
    # genes of the shipped table that this 9,015-gene subset lacks are reported as well
    assert set(absent) - set(extra["gene"]) == set(markers["gene"]) - set(adata.var_names)
    assert "Ghost" in set(missing.loc[missing["gene"] == "*", "cell_type"])
    assert np.all(copy.obs[annotate.score_column("Ghost")] == 0)
    assert (table2["label"] != "Ghost").all()
    assert (table2["label"].to_numpy() == table["label"].to_numpy()).mean() >= 0.8


def test_marker_table_matching_no_gene_is_an_error_naming_the_file(kang, tmp_path):
    adata, _, _ = kang
    path = tmp_path / "mouse_markers.tsv"
    pd.DataFrame({"cell_type": ["B", "T"], "gene": ["Cd79a", "Cd3e"]}).to_csv(path, sep="\t", index=False)
    table = annotate.read_marker_table(path)
    with pytest.raises(InputError, match=str(path)):
        annotate.annotate_markers(adata.copy(), table, KEY, marker_path=path)
    # The rule script checks this against the file's gene names before loading the matrices.
    h5ad = tmp_path / "query.h5ad"
    ad.AnnData(X=sp.csr_matrix(adata.X[:5]), var=pd.DataFrame(index=adata.var_names)).write_h5ad(h5ad)
    with pytest.raises(InputError, match="mouse_markers.tsv"):
        annotate.match_markers(table, annotate.read_var_names(h5ad), path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("celltype\tgene\nB\tCD79A\n", "lacks column"),
        ("cell_type\tgene\tweight\nB\tCD79A\tlots\n", "not a non-zero number"),
        ("cell_type\tgene\tweight\nB\tCD79A\t0\n", "not a non-zero number"),
        ("cell_type\tgene\nB\tCD79A\nB\tCD79A\n", "twice"),
        ("cell_type\tgene\tweight\nB\tCD79A\t1\nNK\tCD3E\t-1\n", "only negative markers"),
        ("cell_type\tgene\nUnknown\tCD79A\n", "reserved"),
        ("cell_type\tgene\tparent\nB\tCD79A\tLymph\nB\tMS4A1\tOther\n", "more than one parent"),
        ("cell_type\tgene\n", "no rows"),
    ],
)
def test_malformed_marker_tables_are_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        annotate.read_marker_table(path)
    assert str(path) in str(info.value)


def test_config_paths_fall_back_to_the_workflow_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {
        "cohort": {"leiden_resolutions": [0.25, 0.5, 1.0], "default_resolution": 0.5},
        "annotation": {"markers": "workflow/resources/markers/human_pbmc.tsv", "resolution": None},
    }
    settings = annotate.check_annotation_config(config, REPO)
    assert Path(settings["markers"]) == MARKERS
    assert settings["cluster_key"] == "leiden_0.5" and settings["methods"] == ["markers"]
    # A local file of the same name wins over the shipped one.
    local = tmp_path / "workflow" / "resources" / "markers"
    local.mkdir(parents=True)
    shutil.copy(MARKERS, local / "human_pbmc.tsv")
    assert (
        Path(annotate.check_annotation_config(config, REPO)["markers"]).resolve()
        == (local / "human_pbmc.tsv").resolve()
    )
    with pytest.raises(InputError, match="annotation.resolution 2.0"):
        annotate.check_annotation_config(
            {**config, "annotation": {**config["annotation"], "resolution": 2}}, REPO
        )
    with pytest.raises(InputError, match="celltypist_model"):
        annotate.check_annotation_config(
            {**config, "annotation": {**config["annotation"], "celltypist_model": "models/none.pkl"}}, REPO
        )


# --------------------------------------------------------------------------------------------
# CellTypist model application and reference label transfer
# --------------------------------------------------------------------------------------------
def train_celltypist_style_model(reference: ad.AnnData, path: Path, seed: int = 0) -> Path:
    """A model in CellTypist's file format (pickled dict: Model = LogisticRegression with
    `features`, Scaler_ = StandardScaler, description), trained as celltypist.train does on
    log1p counts per 10k scaled with a StandardScaler (values above 10 set to 10)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = annotate.lognormalise(reference.X).toarray()
    scaler = StandardScaler().fit(x)
    scaled = scaler.transform(x)
    scaled[scaled > 10] = 10
    classifier = LogisticRegression(max_iter=300, C=0.1, random_state=seed).fit(
        scaled, reference.obs["label"]
    )
    classifier.features = np.asarray(reference.var_names)
    description = {
        "date": "",
        "details": "test model: Kang 2018 control, 6 donors",
        "url": "",
        "source": "",
        "version": "",
    }
    with path.open("wb") as handle:
        pickle.dump({"Model": classifier, "Scaler_": scaler, "description": description}, handle)
    return path


@pytest.fixture(scope="module")
def reference():
    return annotate.read_reference(DATA / "kang_reference_6donors.h5ad", "cell_type")


@pytest.fixture(scope="module")
def celltypist_model(reference, tmp_path_factory):
    return train_celltypist_style_model(reference, tmp_path_factory.mktemp("model") / "kang.pkl")


def test_celltypist_model_labels_other_donors(kang_query, celltypist_model):
    """A model trained on 6 Kang donors labels the 2 other donors: >= 85% of control cells and
    >= 60% of IFN-beta cells per cell; majority voting over clusters lifts control to >= 85%."""
    adata = kang_query.copy()
    votes = annotate.annotate_celltypist(adata, celltypist_model, KEY)
    obs = adata.obs
    ctrl, stim = obs["condition"] == "ctrl", obs["condition"] == "stim"
    per_cell = obs["cell_type_celltypist_cell"].astype(str) == obs["published"]
    assert per_cell[ctrl].mean() >= 0.85, per_cell[ctrl].mean()
    assert per_cell[stim].mean() >= 0.6, per_cell[stim].mean()
    majority = obs["cell_type_celltypist"].astype(str) == obs["published"]
    assert majority[ctrl].mean() >= 0.85
    assert set(votes.columns) >= {"cluster", "label", "fraction", "n_cells"}
    assert obs["cell_type_celltypist_probability"].between(0, 1).all()


def test_celltypist_application_matches_the_celltypist_package(kang_query, celltypist_model):
    """Same labels and probabilities as celltypist.annotate (only when celltypist is installed)."""
    celltypist = pytest.importorskip("celltypist")
    adata = kang_query.copy()
    counts = adata.layers["counts"]
    lognorm = annotate.lognormalise(counts, annotate.library_sizes(adata, counts))
    ours = annotate.celltypist_predict(
        annotate.load_celltypist_model(celltypist_model), lognorm, adata.var_names
    )
    query = ad.AnnData(
        X=lognorm, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names)
    )
    theirs = celltypist.annotate(query, model=str(celltypist_model))
    assert (
        ours["label"].to_numpy() == theirs.predicted_labels["predicted_labels"].astype(str).to_numpy()
    ).all()
    probability = theirs.probability_matrix.to_numpy()[
        np.arange(adata.n_obs), theirs.decision_matrix.to_numpy().argmax(1)
    ]
    assert np.allclose(ours["probability"].to_numpy(), probability, atol=1e-6)


def test_celltypist_bad_model_files(tmp_path, kang_query):
    not_a_model = tmp_path / "model.pkl"
    with not_a_model.open("wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    with pytest.raises(InputError, match="not a CellTypist model"):
        annotate.load_celltypist_model(not_a_model)
    with pytest.raises(InputError, match="does not exist"):
        annotate.load_celltypist_model(tmp_path / "absent.pkl")


def test_reference_label_transfer_to_other_donors(kang_query, reference):
    """kNN transfer from 6 Kang donors (control) to 2 other donors (control and IFN-beta):
    >= 85% of control cells and >= 70% of IFN-beta cells get their published type."""
    adata = kang_query.copy()
    annotate.annotate_reference(adata, DATA / "kang_reference_6donors.h5ad", "cell_type", KEY, seed=0)
    obs = adata.obs
    right = obs["cell_type_reference_cell"].astype(str) == obs["published"]
    ctrl, stim = obs["condition"] == "ctrl", obs["condition"] == "stim"
    assert right[ctrl].mean() >= 0.85, right[ctrl].mean()
    assert right[stim].mean() >= 0.70, right[stim].mean()
    assert obs["cell_type_reference_confidence"].between(0, 1).all()
    # Seeded: the same call gives the same labels.
    again = kang_query.copy()
    annotate.annotate_reference(again, DATA / "kang_reference_6donors.h5ad", "cell_type", KEY, seed=0)
    assert (again.obs["cell_type_reference_cell"] == obs["cell_type_reference_cell"]).all()


def test_reference_errors_name_the_file_and_column(tmp_path, kang_query):
    path = tmp_path / "ref.h5ad"
    ref = ad.read_h5ad(DATA / "kang_reference_6donors.h5ad")
    ref.write_h5ad(path)
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        annotate.read_reference(path, "celltype")
    lognorm = ref.copy()
    lognorm.X = annotate.lognormalise(ref.X)
    lognorm.write_h5ad(path)
    with pytest.raises(InputError, match="no raw integer counts"):
        annotate.read_reference(path, "cell_type")
    few = ref[:, :50].copy()
    few.write_h5ad(path)
    with pytest.raises(InputError, match=r"shares \d+ genes with the data \(< 200\)"):
        annotate.annotate_reference(kang_query.copy(), path, "cell_type", KEY)


def test_run_annotation_with_all_methods_writes_agreement(kang_query, markers, celltypist_model):
    adata = kang_query.copy()
    tables = annotate.run_annotation(
        adata,
        markers,
        KEY,
        marker_path=MARKERS,
        celltypist_model=celltypist_model,
        reference=DATA / "kang_reference_6donors.h5ad",
        reference_label_key="cell_type",
        n_top_genes=3,
    )
    for column in ("cell_type", "cell_type_confidence", "cell_type_celltypist", "cell_type_reference"):
        assert column in adata.obs
    agreement = tables["agreement"]
    assert list(agreement["cluster"]) == list(tables["clusters"]["cluster"])
    expected = {"markers_label", "markers_support", "celltypist_label", "celltypist_support", "agree"}
    assert expected | {"reference_label", "reference_support", "celltypist_as_markers"} <= set(agreement)
    # Support is the share of the cluster's cells whose own label is the cluster's majority label.
    cells = adata.obs[KEY].astype(str) == agreement["cluster"].iloc[0]
    majority = adata.obs.loc[cells, "cell_type_celltypist_cell"].astype(str).value_counts(normalize=True)
    assert agreement["celltypist_support"].iloc[0] == pytest.approx(majority.iloc[0], abs=1e-4)
    # Both model-based methods use Kang's vocabulary and agree with each other on most cells.
    same = (agreement["celltypist_label"] == agreement["reference_label"]) * agreement["n_cells"]
    assert same.sum() / agreement["n_cells"].sum() >= 0.8
    # Where the marker method assigned a type, the translated labels of the others agree on most cells.
    assigned = agreement["markers_label"] != annotate.UNKNOWN
    agreed = agreement.loc[assigned, "agree"] * agreement.loc[assigned, "n_cells"]
    assert agreed.sum() / agreement.loc[assigned, "n_cells"].sum() >= 0.7, agreement
    clusters = tables["clusters"]
    assert (
        clusters["top_markers"].str.count(",").le(2).all() and clusters["top_markers"].str.len().gt(0).all()
    )


# --------------------------------------------------------------------------------------------
# Composition and figures
# --------------------------------------------------------------------------------------------
def test_composition_tables(kang_query, markers):
    adata = kang_query.copy()
    annotate.annotate_markers(adata, markers, KEY, marker_path=MARKERS)
    obs = adata.obs.rename(columns={"sample_id": "sample"})
    per_sample, per_condition = annotate.composition(obs)
    sizes = obs["sample"].value_counts()
    totals = per_sample.groupby("sample")["n_cells"].sum()
    assert (totals == sizes.reindex(totals.index)).all()
    assert np.allclose(per_sample.groupby("sample")["fraction"].sum(), 1.0)
    assert (
        per_sample.drop_duplicates("sample").set_index("sample")["condition"]
        == obs.groupby("sample", observed=True)["condition"].first().astype(str)
    ).all()
    direct = pd.crosstab(obs["sample"], obs["cell_type"], normalize="index")
    for row in per_condition.itertuples():
        members = obs.loc[obs["condition"] == row.condition, "sample"].unique()
        assert row.mean_sample_fraction == pytest.approx(direct.loc[members, row.cell_type].mean(), abs=1e-6)
        assert row.n_samples == len(members)
    pooled = per_condition.groupby("condition")["fraction_pooled"].sum()
    assert np.allclose(pooled, 1.0)


def test_figures_are_written(kang_query, markers, tmp_path):
    adata = kang_query.copy()
    annotate.annotate_markers(adata, markers, KEY, marker_path=MARKERS)
    adata.obs["sample"] = adata.obs["sample_id"]
    per_sample, per_condition = annotate.composition(adata.obs)
    paths = {name: tmp_path / f"{name}.png" for name in ("umap", "dotplot", "bars")}
    annotate.plot_umap_labels(adata, ["cell_type"], paths["umap"], basis="X_pca")
    annotate.plot_marker_dotplot(adata, markers, paths["dotplot"])
    annotate.plot_composition(per_sample, per_condition, paths["bars"])
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    genes = annotate.dotplot_genes(adata, markers)
    assigned = set(adata.obs["cell_type"].astype(str)) - {annotate.UNKNOWN}
    assert set(genes) <= assigned
    flat = [g for v in genes.values() for g in v]
    assert len(flat) == len(set(flat))


# --------------------------------------------------------------------------------------------
# The rules, on the bundled example's cells (slow: per-sample, cohort and annotation stages)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_annotation_rules_end_to_end(full_run, tmp_path):
    """PBMC of COVID-19 patients and healthy donors (bundled example, 4 samples x 400 cells):
    integrated.h5ad carries the labels, the main PBMC lineages are found, the tables agree with
    the object; then a marker table matching no gene fails the rule with the file named."""
    from helpers import run_workflow

    # The shared whole-workflow run (conftest.full_run: 4 bundled samples x 400 cells, default config).
    project = full_run
    adata = ad.read_h5ad(project / "results/cohort/integrated.h5ad")
    assert {"cell_type", "cell_type_confidence", "leiden_0.5", "sample", "condition"} <= set(adata.obs)
    assert {"X_umap", "X_pca_harmony"} <= set(adata.obsm) and "counts" in adata.layers
    majors = set(adata.obs["cell_type"].astype(str).map(MARKER_MAJOR).dropna())
    assert {"T", "B", "NK", "Mono"} <= majors, adata.obs["cell_type"].value_counts()
    assert (adata.obs["cell_type"] == annotate.UNKNOWN).mean() < 0.3
    clusters = pd.read_csv(
        project / "results/annotation/cluster_annotation.tsv", sep="\t", dtype={"cluster": str}
    )
    label_of = dict(zip(clusters["cluster"], clusters["label"], strict=True))
    assert (adata.obs["leiden_0.5"].astype(str).map(label_of) == adata.obs["cell_type"].astype(str)).all()
    assert clusters["n_cells"].sum() == adata.n_obs
    composition = pd.read_csv(project / "results/annotation/composition.tsv", sep="\t")
    assert composition["n_cells"].sum() == adata.n_obs
    assert np.allclose(composition.groupby("sample")["fraction"].sum(), 1.0)
    for figure in ("umap_cell_type", "marker_dotplot", "composition"):
        assert (project / "results/annotation/figures" / f"{figure}.png").stat().st_size > 10_000
    assert not (project / "results/annotation/method_agreement.tsv").exists()

    # A marker table of mouse symbols: refused when the DAG is built (the input genes are read
    # then), naming the table, before annotate_cells runs.
    bad = shutil.copytree(project, tmp_path / "bad_markers", ignore=shutil.ignore_patterns(".snakemake"))
    table = bad / "mouse_markers.tsv"
    pd.DataFrame({"cell_type": ["B", "T"], "gene": ["Cd79a", "Cd3e"]}).to_csv(table, sep="\t", index=False)
    config = yaml.safe_load((bad / "config" / "config.yaml").read_text())
    config["annotation"]["markers"] = "mouse_markers.tsv"
    (bad / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = (bad / "results/cohort/integrated.h5ad").stat().st_mtime_ns
    result = run_workflow(bad, "results/cohort/integrated.h5ad", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mouse_markers.tsv" in output and "none of its 2 genes" in output, output[-3000:]
    assert (bad / "results/cohort/integrated.h5ad").stat().st_mtime_ns == before
