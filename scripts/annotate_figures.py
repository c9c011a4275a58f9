"""Rule annotation_figures: UMAP by cell type, marker dot plot, composition tables and bars."""

from sccohort.runtime import run_rule


def main(smk, log):
    import anndata as ad
    from sccohort import annotate, cohort
    from sccohort.runtime import atomic_path, write_table

    markers = annotate.read_marker_table(smk.input.markers)
    # The figures need obs, the UMAP and X of the marker genes only, not the whole matrix.
    base = cohort.read_cohort(smk.input.h5ad, parts=("obs", "var", "obsm", "uns"))
    genes = list(dict.fromkeys(markers.loc[markers["gene"].isin(base.var_names), "gene"]))
    adata = ad.AnnData(
        X=cohort.read_gene_columns(smk.input.h5ad, genes),
        obs=base.obs,
        var=base.var.loc[genes],
        obsm=dict(base.obsm),
        uns=dict(base.uns),
    )
    per_sample, per_condition = annotate.composition(adata.obs)
    write_table(per_sample, smk.output.composition)
    write_table(per_condition, smk.output.by_condition)
    keys = ["cell_type"] + [f"cell_type_{m}" for m in smk.params.methods if m != "markers"]
    with atomic_path(smk.output.umap) as tmp:
        annotate.plot_umap_labels(adata, keys, tmp, seed=int(smk.params.seed))
    with atomic_path(smk.output.dotplot) as tmp:
        annotate.plot_marker_dotplot(adata, markers, tmp)
    with atomic_path(smk.output.bars) as tmp:
        annotate.plot_composition(per_sample, per_condition, tmp)
    log.info("Composition per condition:\n%s", per_condition.to_string(index=False))


run_rule(main, snakemake)  # noqa: F821
