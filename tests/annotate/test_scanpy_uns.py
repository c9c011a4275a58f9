"""integrated.h5ad as scanpy would have made it: colours of every categorical the report colours
(same palette, same order), cohort_markers' table as uns["rank_genes_groups"], no None in uns."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sccohort.annotate.scanpy_uns import store_category_colours, store_rank_genes_groups
from sccohort.plotting import palette
from sccohort.report.tables import natural_order
from sccohort.runtime import write_h5ad, write_h5ad_update


def small_object(n: int = 60) -> ad.AnnData:
    rng = np.random.default_rng(0)
    clusters = [str(i) for i in rng.integers(0, 12, n)]
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(rng.choice(["s_b", "s_a", "s_c"], n)),
            "condition": pd.Categorical(rng.choice(["treated", "control"], n)),
            "dose": pd.Categorical(rng.choice(["10", "2", "1"], n)),
            "leiden_0.5": pd.Categorical(clusters, categories=sorted(set(clusters))),
        },
        index=[f"c{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"G{i}" for i in range(20)])
    adata = ad.AnnData(
        X=sp.random(n, 20, density=0.3, format="csr", dtype=np.float32, random_state=0), obs=obs, var=var
    )
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    return adata


def marker_table(groups, n_genes=3) -> pd.DataFrame:
    rows = []
    for g in groups:
        for rank in range(1, n_genes + 1 - (g == "11")):  # cluster 11: one gene fewer
            rows.append((g, rank, f"G{(int(g) + rank) % 20}", 10.0 - rank, 1.5, 1e-5 * rank, 1e-4 * rank))
    return pd.DataFrame(
        rows, columns=["cluster", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj"]
    )


def test_colours_follow_the_report_order_and_palette():
    adata = small_object()
    keys = store_category_colours(adata, sample_order=["s_c", "s_a", "s_b", "s_dropped"])
    assert set(keys) == {"sample", "condition", "dose", "leiden_0.5"}
    # the sheet's order for samples (as the report's data.qc), natural order for the rest
    assert list(adata.obs["sample"].cat.categories) == ["s_c", "s_a", "s_b"]
    for key in ("condition", "dose", "leiden_0.5"):
        order = natural_order(adata.obs[key])
        assert list(adata.obs[key].cat.categories) == order
        assert list(adata.uns[f"{key}_colors"]) == list(palette(order).values())
    assert list(adata.obs["leiden_0.5"].cat.categories)[:3] == ["0", "1", "2"]
    assert list(adata.obs["dose"].cat.categories) == ["1", "2", "10"]


def test_rank_genes_groups_reads_back_with_scanpy(tmp_path):
    adata = small_object()
    groups = list(adata.obs["leiden_0.5"].cat.categories)
    table = marker_table(groups)
    store_rank_genes_groups(adata, table, groupby="leiden_0.5")
    adata.uns["log1p"] = {"base": None}
    adata.uns["settings"] = {"kept": 1, "dropped": None, "items": ["a", None]}
    write_h5ad(adata, tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert back.uns["log1p"] == {} and back.uns["settings"]["kept"] == 1
    assert "dropped" not in back.uns["settings"] and list(back.uns["settings"]["items"]) == ["a"]
    frame = sc.get.rank_genes_groups_df(back, group=None)
    first = frame[frame["group"] == "0"].reset_index(drop=True)
    expected = table[table["cluster"] == "0"].reset_index(drop=True)
    assert list(first["names"]) == list(expected["gene"])
    np.testing.assert_allclose(first["scores"], expected["score"])
    np.testing.assert_allclose(first["pvals_adj"], expected["pval_adj"])
    np.testing.assert_allclose(first["logfoldchanges"], expected["logfoldchange"])
    # the shorter group is padded (empty name, NaN statistics), every group has a column
    assert set(frame["group"]) == set(groups)
    short = frame[frame["group"] == "11"]
    assert list(short["names"])[-1] == "" and np.isnan(short["scores"].iloc[-1])
    assert back.uns["rank_genes_groups"]["params"]["groupby"] == "leiden_0.5"


def test_write_h5ad_update_drops_none_from_uns(tmp_path):
    adata = small_object()
    write_h5ad(adata, tmp_path / "source.h5ad")
    adata.uns["log1p"] = {"base": None}
    write_h5ad_update(tmp_path / "source.h5ad", adata, tmp_path / "out.h5ad", keys=("obs", "uns"))
    assert ad.read_h5ad(tmp_path / "out.h5ad").uns["log1p"] == {}


@pytest.mark.slow
def test_integrated_h5ad_is_scanpy_native(full_run, tmp_path):
    """sc.pl.umap picks the report's colours from uns, sc.get.rank_genes_groups_df reads the
    markers, and uns holds no None (older anndata readers refuse it)."""
    import matplotlib

    matplotlib.use("Agg")
    adata = ad.read_h5ad(full_run / "results" / "cohort" / "integrated.h5ad")
    composition = pd.read_csv(full_run / "results" / "annotation" / "composition.tsv", sep="\t")
    types = list(dict.fromkeys(composition["cell_type"].astype(str)))
    assert list(adata.obs["cell_type"].cat.categories) == types
    assert list(adata.uns["cell_type_colors"]) == list(palette(types).values())
    cluster_key = adata.uns["rank_genes_groups"]["params"]["groupby"]
    for key in ("sample", "condition", cluster_key):
        assert len(adata.uns[f"{key}_colors"]) == len(adata.obs[key].cat.categories)
    samples = pd.read_csv(full_run / "config" / "samples.tsv", sep="\t")["sample"]
    assert list(adata.obs["sample"].cat.categories) == [s for s in samples if s in set(adata.obs["sample"])]
    figure = sc.pl.umap(adata, color=["cell_type", cluster_key], show=False, return_fig=True)
    figure.savefig(tmp_path / "umap.png")
    collection = figure.axes[0].collections[0]
    drawn = {matplotlib.colors.to_hex(c) for c in collection.get_facecolors()}
    assert drawn <= set(palette(types).values())
    markers = pd.read_csv(full_run / "results" / "cohort" / "markers.tsv", sep="\t", dtype={"cluster": str})
    frame = sc.get.rank_genes_groups_df(adata, group="0")
    top = markers[markers["cluster"] == "0"].sort_values("rank")
    assert list(frame["names"][: len(top)]) == list(top["gene"])

    def nones(value, path=""):
        if value is None:
            return [path]
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in nones(v, f"{path}/{k}")]
        return []

    assert nones(dict(adata.uns)) == []
