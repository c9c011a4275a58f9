"""Rule load_sample: read one sample's matrix (any supported layout), check it, attach sheet columns."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.qc import load_sample

    load_sample(
        matrix=smk.input.matrix,
        output=smk.output.h5ad,
        sample_row=smk.params.sample_row,
        covariates=smk.params.covariates,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
