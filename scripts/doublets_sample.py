"""Rule doublets_sample: doublet scores and calls for one sample, then the sample's final outputs."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.qc import doublets_sample

    doublets_sample(
        qc_h5ad=smk.input.h5ad,
        output=smk.output.h5ad,
        cells_table=smk.output.cells,
        thresholds_json=smk.output.thresholds,
        sample=smk.wildcards.sample,
        sample_row=smk.params.sample_row,
        qc_options=smk.params.qc,
        doublet_options=smk.params.doublets,
        seed=smk.params.seed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
