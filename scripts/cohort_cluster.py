"""Rule cohort_cluster: Harmony, kNN graphs, UMAPs and Leiden clustering."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import cohort
    from sccohort.runtime import write_h5ad_update, write_table

    # Integration and clustering use the PCs only: the count matrices stay on disk and are
    # copied into the output as they are (the job's memory no longer grows with genes x cells).
    adata = cohort.read_cohort(smk.input.h5ad, parts=("obs", "var", "obsm", "uns"))
    # The uncorrected graph and UMAP are computed by cohort_uncorrected, at the same time.
    cohort.integrate_and_cluster(
        adata, smk.params.cohort, seed=smk.params.seed, threads=smk.threads, uncorrected=False
    )
    write_table(cohort.embedding_table(adata, "X_umap"), smk.output.umap)
    write_h5ad_update(smk.input.h5ad, adata, smk.output.h5ad)
    log.info("Wrote %s.", smk.output.h5ad)


run_rule(main, snakemake)  # noqa: F821
