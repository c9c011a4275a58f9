"""Rule cohort_markers: Wilcoxon marker genes per cluster and their dot plot."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.cohort import cohort_markers

    cohort_markers(
        clustered_h5ad=smk.input.h5ad,
        markers=smk.output.markers,
        dotplot=smk.output.dotplot,
        cohort_options=smk.params.cohort,
        threads=smk.threads,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
