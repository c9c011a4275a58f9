"""Rule cohort_merge: merge the QC-passed samples, normalise, select HVGs, PCA."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.cohort import cohort_merge

    cohort_merge(
        samples=smk.params.samples,
        h5ads=smk.input.h5ads,
        output=smk.output.h5ad,
        summary=smk.output.summary,
        sheet=smk.params.sheet,
        cohort_options=smk.params.cohort,
        qc_options=smk.params.qc,
        seed=smk.params.seed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
