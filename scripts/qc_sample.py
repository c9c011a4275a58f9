"""Rule qc_sample: per-barcode QC metrics and adaptive + fixed thresholds for one sample."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.qc import qc_sample

    qc_sample(
        raw_h5ad=smk.input.h5ad,
        output=smk.output.h5ad,
        sample_row=smk.params.sample_row,
        override_columns=smk.params.override_columns,
        qc_options=smk.params.qc,
        seed=smk.params.seed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
