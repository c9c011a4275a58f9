"""The same analysis as the sccohort workflow, written as one plain Scanpy script.

This is the alternative a user weighs the workflow against: one process, one AnnData, the
standard scanpy tutorial / single-cell best-practices calls, the parameters of the project's
config/config.yaml. It is written the way a competent user would write it, neither sabotaged
nor tuned:

    per sample: read_10x_h5 -> QC metrics -> MAD outlier filter (+ fixed floors/caps) ->
                sc.pp.scrublet -> drop doublets
    merge (ad.concat) -> filter genes -> counts layer -> normalize_total + log1p ->
    HVG (seurat_v3 on counts, batch-aware) -> scale + PCA (50) -> harmonypy.run_harmony ->
    neighbours -> UMAP -> Leiden (igraph) -> rank_genes_groups (Wilcoxon) ->
    marker annotation (score_genes per cell type, cluster means) ->
    pseudobulk (sc.get.aggregate) + PyDESeq2 per cell type -> h5ad, tables, figures

Usage:
    python benchmarks/plain_scanpy.py --project benchmarks/work/small [--out DIR]

It prints each step's wall time and writes them to <out>/timings.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import median_abs_deviation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

TIMINGS: dict[str, float] = {}


@contextmanager
def step(name: str):
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    TIMINGS[name] = TIMINGS.get(name, 0.0) + elapsed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[{elapsed:8.1f} s] {name} (peak RSS so far {peak:,.0f} MB)", flush=True)


def is_outlier(values: pd.Series, n_mads: float, upper_only: bool = False) -> pd.Series:
    """median +/- n MADs (the single-cell best-practices book's is_outlier)."""
    median = np.median(values)
    mad = median_abs_deviation(values)
    high = values > median + n_mads * mad
    if upper_only or mad == 0:
        return high if mad > 0 else pd.Series(False, index=values.index)
    return high | (values < median - n_mads * mad)


def qc_filter(adata: ad.AnnData, qc: dict) -> ad.AnnData:
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    adata.var["ribo"] = adata.var_names.str.startswith(tuple(qc["ribo_prefixes"]))
    adata.var["hb"] = adata.var_names.str.contains(qc["hb_pattern"])
    sc.pp.calculate_qc_metrics(
        adata, qc_vars=["mt", "ribo", "hb"], percent_top=[20], log1p=True, inplace=True
    )
    obs = adata.obs
    outlier = (
        is_outlier(obs["log1p_total_counts"], qc["n_mads_counts"])
        | is_outlier(obs["log1p_n_genes_by_counts"], qc["n_mads_genes"])
        | is_outlier(obs["pct_counts_mt"], qc["n_mads_mt"], upper_only=True)
        | (obs["total_counts"] < qc["min_counts"])
        | (obs["n_genes_by_counts"] < qc["min_genes"])
        | (obs["pct_counts_mt"] > qc["max_pct_mt"])
    )
    if qc.get("max_genes"):
        outlier |= obs["n_genes_by_counts"] > qc["max_genes"]
    return adata[~outlier.to_numpy()].copy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True, help="folder with config/config.yaml")
    parser.add_argument("--out", type=Path, help="output folder (default <project>/plain)")
    args = parser.parse_args()
    project = args.project.resolve()
    out = (args.out or project / "plain").resolve()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "de").mkdir(parents=True, exist_ok=True)
    sc.settings.figdir = out / "figures"
    total_start = time.perf_counter()

    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    sheet = pd.read_csv(project / config["samples"], sep="\t", dtype=str).set_index("sample")
    seed = config["seed"]
    qc, doublets, cohort, annotation, de = (
        config[k] for k in ("qc", "doublets", "cohort", "annotation", "de")
    )

    # ---------------------------------------------------------------- per-sample QC + Scrublet
    samples = {}
    for name, row in sheet.iterrows():
        with step("read"):
            adata = sc.read_10x_h5(project / row["path"])
            adata.var_names_make_unique()
        n_recovered = adata.n_obs
        with step("qc"):
            adata = qc_filter(adata, qc)
        with step("scrublet"):
            rate = doublets["expected_rate"] or min(max(0.008 * n_recovered / 1000, 0.001), 0.3)
            sc.pp.scrublet(
                adata,
                expected_doublet_rate=rate,
                n_prin_comps=doublets["n_prin_comps"],
                random_state=seed,
                verbose=False,
            )
            adata = adata[~adata.obs["predicted_doublet"].fillna(False).astype(bool)].copy()
        for column in ("condition", "donor", "batch"):
            adata.obs[column] = row[column]
        print(f"{name}: {adata.n_obs} of {n_recovered} cells kept", flush=True)
        samples[name] = adata

    # ---------------------------------------------------------------- merge and normalise
    with step("merge"):
        adata = ad.concat(samples, label="sample", index_unique="_", merge="same")
        del samples
        sc.pp.filter_genes(adata, min_cells=cohort["min_cells_per_gene"])
        adata.layers["counts"] = adata.X.copy()
    with step("normalise"):
        sc.pp.normalize_total(adata, target_sum=cohort["target_sum"])
        sc.pp.log1p(adata)

    # ---------------------------------------------------------------- HVG, PCA, Harmony
    with step("hvg"):
        try:
            import skmisc  # noqa: F401  (seurat_v3 needs scikit-misc)

            flavor = "seurat_v3"
        except ImportError:
            flavor = "seurat"
            print("scikit-misc is not installed: HVG flavor 'seurat' on log data instead of seurat_v3")
        sc.pp.highly_variable_genes(
            adata,
            n_top_genes=cohort["n_top_genes"],
            flavor=flavor,
            batch_key=cohort["hvg_batch_key"],
            layer="counts" if flavor == "seurat_v3" else None,
        )
        if cohort["hvg_exclude_mt_ribo"]:
            mt_ribo = adata.var_names.str.startswith(("MT-", *qc["ribo_prefixes"]))
            adata.var.loc[mt_ribo, "highly_variable"] = False
        TIMINGS["hvg_flavor"] = flavor
    with step("scale+pca"):
        hvg = adata[:, adata.var["highly_variable"]].copy()
        sc.pp.scale(hvg, max_value=10)
        sc.tl.pca(hvg, n_comps=cohort["n_pcs"], svd_solver="arpack", random_state=seed)
        adata.obsm["X_pca"] = hvg.obsm["X_pca"]
        adata.uns["pca"] = hvg.uns["pca"]
        del hvg
    with step("harmony"):
        import harmonypy

        ho = harmonypy.run_harmony(
            adata.obsm["X_pca"],
            adata.obs,
            cohort["batch_keys"],
            theta=cohort["harmony_theta"],
            max_iter_harmony=cohort["harmony_max_iter"],
            random_state=seed,
            verbose=False,
        )
        corrected = np.asarray(ho.Z_corr)  # harmonypy 2.x: cells x PCs
        if corrected.shape != adata.obsm["X_pca"].shape:
            corrected = corrected.T
        adata.obsm["X_pca_harmony"] = corrected

    # ---------------------------------------------------------------- graph, UMAP, Leiden, markers
    with step("neighbors"):
        sc.pp.neighbors(adata, n_neighbors=cohort["n_neighbors"], use_rep="X_pca_harmony", random_state=seed)
    with step("umap"):
        sc.tl.umap(adata, min_dist=cohort["umap_min_dist"], random_state=seed)
    with step("leiden"):
        resolution = annotation.get("resolution") or cohort["default_resolution"]
        sc.tl.leiden(
            adata,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
            key_added="leiden",
        )
        print(f"Leiden at {resolution}: {adata.obs['leiden'].nunique()} clusters", flush=True)
    with step("markers"):
        sc.tl.rank_genes_groups(adata, "leiden", method="wilcoxon")
        sc.get.rank_genes_groups_df(adata, group=None).groupby("group", observed=True).head(
            cohort["n_marker_genes"]
        ).to_csv(out / "markers.csv", index=False)

    # ---------------------------------------------------------------- marker-based annotation
    with step("annotation"):
        markers_path = Path(annotation["markers"])
        if not markers_path.is_absolute() and not (project / markers_path).exists():
            markers_path = REPO / markers_path
        markers = pd.read_csv(project / markers_path, sep="\t", comment="#")
        markers = markers[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
        score_columns = {}
        for cell_type, genes in markers.groupby("cell_type", sort=False)["gene"]:
            column = f"score_{cell_type}"
            sc.tl.score_genes(adata, list(genes), score_name=column, random_state=seed)
            score_columns[column] = cell_type
        means = adata.obs.groupby("leiden", observed=True)[list(score_columns)].mean()
        best = means.idxmax(axis=1).map(score_columns)
        best[means.max(axis=1) < annotation["min_score"]] = "Unknown"
        adata.obs["cell_type"] = adata.obs["leiden"].map(best).astype("category")
        means.assign(cell_type=best).to_csv(out / "cluster_annotation.csv")
        print(adata.obs["cell_type"].value_counts().to_string(), flush=True)

    # ---------------------------------------------------------------- pseudobulk DE
    with step("pseudobulk+deseq2"):
        from pydeseq2.dds import DeseqDataSet
        from pydeseq2.ds import DeseqStats

        pb = sc.get.aggregate(adata, by=["sample", "cell_type"], func="sum", layer="counts")
        n_cells = adata.obs.groupby(["sample", "cell_type"], observed=True).size()
        pb.obs["n_cells"] = [
            n_cells.get((s, c), 0) for s, c in zip(pb.obs["sample"], pb.obs["cell_type"], strict=True)
        ]
        sample_info = sheet.drop(columns="path")
        pb.obs = pb.obs.join(sample_info, on="sample")
        summary = []
        for contrast in de["contrasts"]:
            factor, test, reference = contrast["factor"], contrast["test"], contrast["reference"]
            for cell_type in pb.obs["cell_type"].cat.categories:
                if cell_type in de["exclude_groups"]:
                    continue
                sub = pb[(pb.obs["cell_type"] == cell_type) & (pb.obs["n_cells"] >= de["min_cells"])]
                levels = sub.obs[factor].value_counts()
                if min(levels.get(test, 0), levels.get(reference, 0)) < de["min_replicates"]:
                    summary.append({"contrast": contrast["name"], "cell_type": cell_type, "tested": False})
                    continue
                summed = sub.layers["sum"]
                summed = summed.toarray() if hasattr(summed, "toarray") else np.asarray(summed)
                counts = pd.DataFrame(summed.astype(int), index=sub.obs_names, columns=sub.var_names)
                keep = (counts >= de["min_counts"]).sum(axis=0) >= de["min_samples"]
                counts = counts.loc[:, keep]
                metadata = sub.obs[[factor]].astype(str)
                dds = DeseqDataSet(counts=counts, metadata=metadata, design=de["design"], quiet=True)
                dds.deseq2()
                stats = DeseqStats(dds, contrast=[factor, test, reference], alpha=de["alpha"], quiet=True)
                stats.summary()
                results = stats.results_df
                name = f"{contrast['name']}.{cell_type}".replace(" ", "_")
                results.to_csv(out / "de" / f"{name}.csv")
                n_sig = int((results["padj"] < de["alpha"]).sum())
                summary.append(
                    {
                        "contrast": contrast["name"],
                        "cell_type": cell_type,
                        "tested": True,
                        "n_significant": n_sig,
                    }
                )
                print(f"DE {contrast['name']} {cell_type}: {n_sig} genes at padj < {de['alpha']}", flush=True)
        pd.DataFrame(summary).to_csv(out / "de" / "summary.csv", index=False)

    # ---------------------------------------------------------------- figures and the final object
    with step("figures"):
        sc.pl.violin(
            adata,
            ["n_genes_by_counts", "total_counts", "pct_counts_mt"],
            groupby="sample",
            multi_panel=True,
            rotation=90,
            show=False,
        )
        plt.savefig(out / "figures" / "qc_violin.png", dpi=100, bbox_inches="tight")
        plt.close("all")
        sc.pl.umap(adata, color=["sample", "condition", "leiden", "cell_type"], ncols=2, show=False)
        plt.savefig(out / "figures" / "umap.png", dpi=100, bbox_inches="tight")
        plt.close("all")
        genes = {t: list(g)[:4] for t, g in markers.groupby("cell_type", sort=False)["gene"]}
        sc.pl.dotplot(adata, genes, groupby="cell_type", standard_scale="var", show=False)
        plt.savefig(out / "figures" / "marker_dotplot.png", dpi=100, bbox_inches="tight")
        plt.close("all")
    with step("write_h5ad"):
        adata.write_h5ad(out / "plain.h5ad")

    TIMINGS["total"] = time.perf_counter() - total_start
    TIMINGS["n_cells_analysed"] = int(adata.n_obs)
    TIMINGS["peak_rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
    print(f"Done: {adata.n_obs} cells in {TIMINGS['total']:.1f} s; outputs in {out}", flush=True)


if __name__ == "__main__":
    main()
