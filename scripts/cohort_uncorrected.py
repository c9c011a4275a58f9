"""Rule cohort_uncorrected: kNN graph and UMAP of the uncorrected PCs (the diagnostics' "before")."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.cohort import cohort_uncorrected

    cohort_uncorrected(
        pca_h5ad=smk.input.h5ad,
        output=smk.output.h5ad,
        cohort_options=smk.params.cohort,
        seed=smk.params.seed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
