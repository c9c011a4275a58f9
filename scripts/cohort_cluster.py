"""Rule cohort_cluster: Harmony, kNN graph, UMAP and Leiden clustering."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.cohort import cohort_cluster

    cohort_cluster(
        pca_h5ad=smk.input.h5ad,
        output=smk.output.h5ad,
        umap_table=smk.output.umap,
        cohort_options=smk.params.cohort,
        seed=smk.params.seed,
        threads=smk.threads,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
