"""Rule cohort_markers: Wilcoxon marker genes per cluster and their dot plot."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import cohort
    from sccohort.runtime import write_table

    p = cohort.cohort_params(smk.params.cohort)
    adata = cohort.read_cohort(smk.input.h5ad, parts=("X", "obs", "var", "uns"))
    cluster_key = adata.uns["cohort"]["default_cluster_key"]
    # rebinding frees the whole matrix before the test makes its copies of the tested genes
    adata = cohort.restrict_to_marker_genes(adata, cluster_key, float(p["marker_min_pct"]))
    markers = cohort.find_markers(adata, cluster_key, n_genes=int(p["n_marker_genes"]))
    write_table(markers, smk.output.markers)
    cohort.plot_marker_dotplot(adata, markers, cluster_key, smk.output.dotplot)
    log.info("%d marker rows for %d clusters.", len(markers), markers["cluster"].nunique())


run_rule(main, snakemake)  # noqa: F821
