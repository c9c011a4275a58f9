"""Rule cohort_diagnostics: batch mixing and neighbourhood purity before/after integration, UMAP figures."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.cohort import cohort_diagnostics

    output = smk.output
    cohort_diagnostics(
        clustered_h5ad=smk.input.h5ad,
        # absent (an empty input) when integration is none
        uncorrected_h5ad=smk.input.get("uncorrected") or None,
        umap_pca=output.umap_pca,
        metrics=output.metrics,
        metrics_plot=output.metrics_plot,
        before_after=output.before_after,
        by_sample=output.by_sample,
        by_batch=output.by_batch,
        by_condition=output.by_condition,
        by_cluster=output.by_cluster,
        cohort_options=smk.params.cohort,
        seed=smk.params.seed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
