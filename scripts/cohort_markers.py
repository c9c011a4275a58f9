"""Rule cohort_markers: Wilcoxon marker genes per cluster and their dot plot."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import cohort
    from sccohort.runtime import write_table

    p = cohort.cohort_params(smk.params.cohort)
    # only the tested genes' columns are read (in row chunks): the whole matrix is never in memory
    adata = cohort.read_marker_genes(smk.input.h5ad, float(p["marker_min_pct"]))
    cluster_key = adata.uns["cohort"]["default_cluster_key"]
    markers = cohort.find_markers(adata, cluster_key, n_genes=int(p["n_marker_genes"]), threads=smk.threads)
    write_table(markers, smk.output.markers)
    cohort.plot_marker_dotplot(adata, markers, cluster_key, smk.output.dotplot)
    log.info("%d marker rows for %d clusters.", len(markers), markers["cluster"].nunique())


run_rule(main, snakemake)  # noqa: F821
