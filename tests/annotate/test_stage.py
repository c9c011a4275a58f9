"""The rules' entry functions (sccohort.annotate.stage) on files, and the rules end to end."""

from __future__ import annotations

import logging
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from annotate.annotation_data import KEY, MARKER_MAJOR, MARKERS
from sccohort.annotate import annotate_cells, annotation_figures
from sccohort.names import UNKNOWN, colours_key

OPTIONS = {
    "min_margin": 0.1,
    "min_score": 0.1,
    "reference_label_key": "cell_type",
    "reference_n_neighbors": 15,
    "min_vote_fraction": 0.0,
}


def cohort_markers_table(adata: ad.AnnData) -> pd.DataFrame:
    """A markers.tsv as cohort_markers writes it (cluster, rank, gene, logfoldchange, ...): the
    Wilcoxon test of each cluster against the rest, top 25 genes."""
    import scanpy as sc

    light = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[KEY]].copy(), var=pd.DataFrame(index=adata.var_names))
    sc.tl.rank_genes_groups(light, KEY, method="wilcoxon", n_genes=25, tie_correct=False, use_raw=False)
    table = sc.get.rank_genes_groups_df(light, group=None)
    table["rank"] = table.groupby("group", observed=True).cumcount() + 1
    return table.rename(columns={"group": "cluster", "names": "gene", "logfoldchanges": "logfoldchange"})


def test_annotate_cells_then_figures_on_files(kang_query, tmp_path):
    """annotate_cells gives the same obs and cluster table whether the clusters' top genes come from
    cohort_markers' table (then only the marker genes' columns of X are read and X is copied
    as it is) or are tested on the whole matrix; the label colours are stored in uns; then
    annotation_figures writes its tables and figures."""
    adata = kang_query.copy()
    adata.obs["sample"] = adata.obs["sample_id"]
    adata.obsm["X_umap"] = adata.obsm["X_pca"][:, :2]
    clustered = tmp_path / "clustered.h5ad"
    adata.write_h5ad(clustered)
    markers_tsv = tmp_path / "markers.tsv"
    cohort_markers_table(adata).to_csv(markers_tsv, sep="\t", index=False)
    outputs = {}
    for name, cluster_markers in (("tested", None), ("from_table", markers_tsv)):
        folder = tmp_path / name
        annotate_cells(
            clustered_h5ad=clustered,
            markers=MARKERS,
            output_h5ad=folder / "integrated.h5ad",
            clusters_table=folder / "cluster_annotation.tsv",
            missing_table=folder / "missing_markers.tsv",
            composition_table=folder / "cluster_composition.tsv",
            cells_table=folder / "cell_types.tsv.gz",
            cluster_markers=cluster_markers,
            cluster_key=KEY,
            options=OPTIONS,
            seed=0,
            log=logging.getLogger("sccohort"),
        )
        outputs[name] = folder
    tested, from_table = (ad.read_h5ad(outputs[n] / "integrated.h5ad") for n in ("tested", "from_table"))
    pd.testing.assert_frame_equal(tested.obs, from_table.obs)
    assert tested.obs.columns[: len(adata.obs.columns)].tolist() == adata.obs.columns.tolist()
    assert (from_table.X != sp.csr_matrix(adata.X)).nnz == 0 and from_table.n_vars == adata.n_vars
    clusters = {
        n: pd.read_csv(outputs[n] / "cluster_annotation.tsv", sep="\t", dtype={"cluster": str})
        for n in outputs
    }
    pd.testing.assert_frame_equal(clusters["tested"], clusters["from_table"])
    assert clusters["tested"]["top_markers"].str.len().gt(0).all()
    # The labels per cluster and per cell agree with the object.
    composition = pd.read_csv(
        outputs["from_table"] / "cluster_composition.tsv", sep="\t", dtype={"cluster": str}
    )
    counts = pd.crosstab(from_table.obs[KEY].astype(str), from_table.obs["cell_type"].astype(str))
    for row in composition.itertuples():
        assert counts.loc[row.cluster, row.label] == row.n_cells
    assert composition["n_cells"].sum() == adata.n_obs
    cells = pd.read_csv(outputs["from_table"] / "cell_types.tsv.gz", sep="\t", dtype=str)
    assert list(cells["barcode"]) == list(from_table.obs_names)
    assert (cells["cell_type"].to_numpy() == from_table.obs["cell_type"].astype(str).to_numpy()).all()
    assert {"unit", "cell_type_lineage", "cell_type_confidence"} <= set(cells.columns)
    categories = list(tested.obs["cell_type"].cat.categories)
    colours = list(tested.uns[colours_key("cell_type")])
    assert len(colours) == len(categories) and len(set(colours)) == len(colours)
    if UNKNOWN in categories:
        assert colours[categories.index(UNKNOWN)] == "#cccccc"

    figures = tmp_path / "figures"
    annotation_figures(
        integrated_h5ad=outputs["from_table"] / "integrated.h5ad",
        markers=MARKERS,
        composition_table=figures / "composition.tsv",
        by_condition_table=figures / "composition_by_condition.tsv",
        umap_png=figures / "umap_cell_type.png",
        dotplot_png=figures / "marker_dotplot.png",
        bars_png=figures / "composition.png",
        methods=["markers"],
        seed=0,
        log=logging.getLogger("sccohort"),
    )
    composition = pd.read_csv(figures / "composition.tsv", sep="\t")
    assert composition["n_cells"].sum() == adata.n_obs
    for figure in ("umap_cell_type", "marker_dotplot", "composition"):
        assert (figures / f"{figure}.png").stat().st_size > 10_000


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
    assert (adata.obs["cell_type"] == UNKNOWN).mean() < 0.3
    clusters = pd.read_csv(
        project / "results/annotation/cluster_annotation.tsv", sep="\t", dtype={"cluster": str}
    )
    # A cluster's label is the most frequent of its cells' labels; the composition table has them all.
    majority = adata.obs.groupby("leiden_0.5", observed=True)["cell_type"].agg(
        lambda s: s.astype(str).value_counts().index[0]
    )
    label_of = dict(zip(clusters["cluster"], clusters["label"], strict=True))
    assert {str(k): v for k, v in majority.items()} == label_of
    assert clusters["n_cells"].sum() == adata.n_obs
    per_label = pd.read_csv(project / "results/annotation/cluster_composition.tsv", sep="\t")
    assert per_label["n_cells"].sum() == adata.n_obs
    assert (project / "results/annotation/cell_types.tsv.gz").stat().st_size > 0
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
