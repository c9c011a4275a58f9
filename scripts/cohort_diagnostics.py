"""Rule cohort_diagnostics: batch mixing and neighbourhood purity before/after integration, UMAP figures."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import cohort
    from sccohort import integration_metrics as im
    from sccohort.runtime import write_table

    output, seed = smk.output, smk.params.seed
    p = cohort.cohort_params(smk.params.cohort)
    adata = cohort.read_cohort(smk.input.h5ad, parts=("obs", "obsm", "obsp", "uns"))
    info = adata.uns["cohort"]
    if info["integration"] == "harmony":  # the uncorrected graph and UMAP: cohort_uncorrected's
        cohort.add_uncorrected(
            adata, cohort.read_cohort(smk.input.uncorrected, parts=("obs", "obsm", "obsp", "uns"))
        )
    write_table(cohort.embedding_table(adata, info["uncorrected_umap_key"]), output.umap_pca)
    cluster_key = info["default_cluster_key"]
    batch_key = p["batch_keys"][0]
    graphs = {"uncorrected": adata.obsp[f"{info['uncorrected_neighbors_key']}_distances"]}
    if info["integration"] == "harmony":
        graphs["harmony"] = adata.obsp["distances"]
    table, _ = im.integration_metrics(adata.obs, graphs, batch_key=batch_key, cluster_key=cluster_key)
    write_table(table, output.metrics)
    log.info("Overall diagnostics:\n%s", table[table["cluster"] == "all"].set_index("graph").T.to_string())

    umap = adata.obsm["X_umap"]
    im.plot_umaps(adata.obs, umap, ["sample"], output.by_sample, seed=seed)
    im.plot_umaps(adata.obs, umap, ["batch"], output.by_batch, seed=seed)
    im.plot_umaps(adata.obs, umap, ["condition"], output.by_condition, seed=seed)
    im.plot_umaps(adata.obs, umap, list(info["leiden_keys"]), output.by_cluster, seed=seed)
    before = adata.obsm[info["uncorrected_umap_key"]]
    after = umap if info["integration"] == "harmony" else None
    im.plot_before_after(adata.obs, before, after, batch_key, cluster_key, output.before_after, seed=seed)
    im.plot_metrics(table, output.metrics_plot)


run_rule(main, snakemake)  # noqa: F821
