"""The cohort stage's rules as entry functions: explicit paths in and out, the config blocks, a
logger. Each holds what its rule script ran; the scripts in scripts/ only pass Snakemake's values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..h5ad import read_parts
from .cluster import add_uncorrected, embed_uncorrected, graph_distances, integrate_and_cluster
from .diagnostics import integration_metrics, plot_before_after, plot_metrics, plot_umaps
from .embed import embedding_table, normalise, run_pca
from .hvg import highly_variable_genes
from .markers import find_markers, plot_marker_dotplot, read_marker_genes
from .merge import clean_for_uns, merge_samples
from .options import cohort_params
from .scib import add_scib_columns, scib_table


# --------------------------------------------------------------------------------------------
# cohort_merge
# --------------------------------------------------------------------------------------------
def prepare_cohort(
    paths: Mapping[str, str | Path],
    *,
    sheet=None,
    options: Mapping | None = None,
    qc_options: Mapping | None = None,
    seed: int = 0,
):
    """Merge, normalise, select HVGs and run PCA (the first cohort rule); returns the AnnData.

    Writes (besides what merge_samples, normalise, highly_variable_genes and run_pca write):
    uns["cohort"] with parameters (the completed cohort block), seed and merge (merge_samples'
    uns["cohort_merge"], moved).
    """
    p = cohort_params(options)
    qc_options = dict(qc_options or {})
    adata = merge_samples(
        paths,
        sheet=sheet,
        join=p["join"],
        min_gene_overlap=float(p["min_gene_overlap"]),
        min_cells_per_gene=int(p["min_cells_per_gene"]),
        min_samples_kept=int(qc_options.get("min_samples_kept", 1)),
        mt_prefix=qc_options.get("mt_prefix", "auto"),
        ribo_prefixes=qc_options.get("ribo_prefixes", ("RPS", "RPL")),
    )
    exclude = (adata.var["mt"] | adata.var["ribo"]).to_numpy() if p["hvg_exclude_mt_ribo"] else None
    hvg = {
        "n_top_genes": int(p["n_top_genes"]),
        "flavor": p["hvg_flavor"],
        "batch_key": p["hvg_batch_key"],
        "exclude": exclude,
        "min_batch_cells": int(p["hvg_min_batch_cells"]),
    }
    # seurat_v3 works on the raw counts: selecting before normalising keeps its temporary copy of
    # the counts and the normalised matrix out of memory at the same time (the merge's peak).
    if p["hvg_flavor"] == "seurat_v3":
        highly_variable_genes(adata, **hvg)
    normalise(adata, target_sum=float(p["target_sum"]))
    if p["hvg_flavor"] != "seurat_v3":  # seurat and cell_ranger work on log-normalised X
        highly_variable_genes(adata, **hvg)
    run_pca(adata, n_comps=int(p["n_pcs"]), scale=bool(p["pca_scale"]), seed=int(seed))
    adata.uns["cohort"] = {
        "parameters": clean_for_uns(p),
        "seed": int(seed),
        "merge": adata.uns.pop("cohort_merge"),
    }
    return adata


def merge_summary(merge: Mapping) -> pd.DataFrame:
    """merge_summary.tsv from uns["cohort"]["merge"]: one row per sample, those QC dropped last."""
    summary = pd.DataFrame(
        {
            "sample": merge["samples"],
            "n_cells": merge["n_cells"],
            "n_genes_in_sample": merge["n_genes_per_sample"],
        }
    )
    summary["n_genes_in_cohort"] = merge["n_genes"]
    summary["dropped_by_qc"] = False
    dropped = list(merge.get("dropped_samples", []))
    if dropped:
        summary = pd.concat(
            [summary, pd.DataFrame({"sample": dropped, "n_cells": 0, "dropped_by_qc": True})],
            ignore_index=True,
        )
        summary = summary.astype({"n_genes_in_sample": "Int64", "n_genes_in_cohort": "Int64"})
    return summary


def cohort_merge(
    *,
    samples: Sequence[str],
    h5ads: Sequence[str | Path],
    output: str | Path,
    summary: str | Path,
    sheet: Mapping[str, Mapping],
    cohort_options: Mapping,
    qc_options: Mapping,
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule cohort_merge: the samples' filtered.h5ad (`h5ads`, in the order of `samples`) merged,
    normalised, with HVGs and PCA, to `output` (pca.h5ad); the per-sample table to `summary`."""
    from ..runtime import write_h5ad, write_table

    paths = dict(zip(samples, h5ads, strict=True))
    adata = prepare_cohort(paths, sheet=sheet, options=cohort_options, qc_options=qc_options, seed=seed)
    write_h5ad(adata, output)
    write_table(merge_summary(adata.uns["cohort"]["merge"]), summary)
    log.info("Wrote %s (%d cells x %d genes).", output, adata.n_obs, adata.n_vars)


# --------------------------------------------------------------------------------------------
# cohort_cluster and cohort_uncorrected
# --------------------------------------------------------------------------------------------
def cohort_cluster(
    *,
    pca_h5ad: str | Path,
    output: str | Path,
    umap_table: str | Path,
    cohort_options: Mapping,
    seed: int,
    threads: int,
    log: logging.Logger,
) -> None:
    """Rule cohort_cluster: Harmony, kNN graph, UMAP and Leiden of pca.h5ad to `output`
    (clustered.h5ad), the UMAP coordinates to `umap_table`."""
    from ..runtime import write_h5ad_update, write_table

    # Integration and clustering use the PCs only: the count matrices stay on disk and are
    # copied into the output as they are (the job's memory no longer grows with genes x cells).
    adata = read_parts(pca_h5ad, parts=("obs", "var", "obsm", "uns"))
    # The uncorrected graph and UMAP are computed by cohort_uncorrected, at the same time.
    integrate_and_cluster(adata, options=cohort_options, seed=seed, threads=threads, uncorrected=False)
    write_table(embedding_table(adata, basis="X_umap"), umap_table)
    write_h5ad_update(pca_h5ad, adata, output)
    log.info("Wrote %s.", output)


def cohort_uncorrected(
    *, pca_h5ad: str | Path, output: str | Path, cohort_options: Mapping, seed: int, log: logging.Logger
) -> None:
    """Rule cohort_uncorrected: kNN graph and UMAP of the uncorrected PCs of pca.h5ad to `output`."""
    import anndata as ad

    from ..runtime import write_h5ad

    # Runs beside cohort_cluster (both single-threaded), from the PCs alone.
    adata = read_parts(pca_h5ad, parts=("obs", "obsm"))
    adata = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names), obsm={"X_pca": adata.obsm["X_pca"]})
    embed_uncorrected(adata, options=cohort_options, seed=seed)
    del adata.obsm["X_pca"]  # already in pca.h5ad
    write_h5ad(adata, output)
    log.info("Wrote the uncorrected kNN graph and UMAP of %d cells to %s.", adata.n_obs, output)


# --------------------------------------------------------------------------------------------
# cohort_diagnostics and cohort_markers
# --------------------------------------------------------------------------------------------
def cohort_diagnostics(
    *,
    clustered_h5ad: str | Path,
    uncorrected_h5ad: str | Path | None,
    umap_pca: str | Path,
    metrics: str | Path,
    metrics_plot: str | Path,
    before_after: str | Path,
    by_sample: str | Path,
    by_batch: str | Path,
    by_condition: str | Path,
    by_cluster: str | Path,
    cohort_options: Mapping,
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule cohort_diagnostics: batch mixing and neighbourhood purity before/after integration
    (`metrics` and its figure), the uncorrected UMAP's coordinates (`umap_pca`), UMAP figures.

    `uncorrected_h5ad` is cohort_uncorrected's output (None when integration is none)."""
    from ..runtime import write_table

    p = cohort_params(cohort_options)
    adata = read_parts(clustered_h5ad, parts=("obs", "obsm", "obsp", "uns"))
    info = adata.uns["cohort"]
    if info["integration"] == "harmony":  # the uncorrected graph and UMAP: cohort_uncorrected's
        if uncorrected_h5ad is None:
            raise InputError("The cohort was integrated, but cohort_uncorrected's output was not given.")
        add_uncorrected(adata, read_parts(uncorrected_h5ad, parts=("obs", "obsm", "obsp", "uns")))
    write_table(embedding_table(adata, basis=info["uncorrected_umap_key"]), umap_pca)
    cluster_key = info["default_cluster_key"]
    batch_key = p["batch_keys"][0]
    # without integration (cohort.integration none, or Harmony skipped: a single batch) the
    # uncorrected graph is the one the clustering used
    graphs = {"uncorrected": graph_distances(adata, info["uncorrected_neighbors_key"])}
    embeddings = {"uncorrected": adata.obsm["X_pca"]}
    label_keys = []
    if info["integration"] == "harmony":
        graphs["harmony"] = graph_distances(adata, "neighbors")
        embeddings["harmony"] = adata.obsm[info["integrated_rep"]]
        # labels that do not come from the corrected graph: Leiden on the uncorrected graph
        label_keys = [uncorrected_clusters(adata, info, resolution=float(p["default_resolution"]), seed=seed)]
    table, _ = integration_metrics(
        adata.obs, graphs, batch_key=batch_key, cluster_key=cluster_key, label_keys=label_keys
    )
    scib = scib_table(
        graphs=graphs,
        embeddings=embeddings,
        batches=adata.obs[batch_key],
        label_sets={key: adata.obs[key] for key in [*label_keys, cluster_key]},
        seed=seed,
    )
    table = add_scib_columns(table, scib)
    write_table(table, metrics)
    log.info("Overall diagnostics:\n%s", table[table["cluster"] == "all"].set_index("graph").T.to_string())

    umap = adata.obsm["X_umap"]
    plot_umaps(adata.obs, umap, keys=["sample"], path=by_sample, seed=seed)
    plot_umaps(adata.obs, umap, keys=["batch"], path=by_batch, seed=seed)
    plot_umaps(adata.obs, umap, keys=["condition"], path=by_condition, seed=seed)
    plot_umaps(adata.obs, umap, keys=list(info["leiden_keys"]), path=by_cluster, seed=seed)
    before = adata.obsm[info["uncorrected_umap_key"]]
    after = umap if info["integration"] == "harmony" else None
    plot_before_after(
        adata.obs, before, after, batch_key=batch_key, cluster_key=cluster_key, path=before_after, seed=seed
    )
    plot_metrics(table, path=metrics_plot)


def uncorrected_clusters(adata, info: Mapping, *, resolution: float, seed: int) -> str:
    """Leiden at `resolution` on the uncorrected kNN graph, with run_leiden's settings. Writes
    obs["leiden_uncorrected"]; returns that key."""
    import scanpy as sc

    from .scib import UNCORRECTED_LABELS

    sc.tl.leiden(
        adata,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
        key_added=UNCORRECTED_LABELS,
        neighbors_key=info["uncorrected_neighbors_key"],
    )
    log_clusters = adata.obs[UNCORRECTED_LABELS].nunique()
    logging.getLogger("sccohort").info("Leiden on the uncorrected graph: %d clusters.", log_clusters)
    return UNCORRECTED_LABELS


def cohort_markers(
    *,
    clustered_h5ad: str | Path,
    markers: str | Path,
    dotplot: str | Path,
    cohort_options: Mapping,
    threads: int,
    log: logging.Logger,
) -> None:
    """Rule cohort_markers: Wilcoxon marker genes per cluster of the default resolution to
    `markers`, their dot plot to `dotplot`."""
    from ..runtime import write_table

    p = cohort_params(cohort_options)
    # only the tested genes' columns are read (in row chunks): the whole matrix is never in memory
    adata = read_marker_genes(clustered_h5ad, min_pct=float(p["marker_min_pct"]))
    cluster_key = adata.uns["cohort"]["default_cluster_key"]
    table = find_markers(adata, groupby=cluster_key, n_genes=int(p["n_marker_genes"]), threads=threads)
    write_table(table, markers)
    plot_marker_dotplot(adata, table, groupby=cluster_key, path=dotplot)
    log.info("%d marker rows for %d clusters.", len(table), table["cluster"].nunique())
