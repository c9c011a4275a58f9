"""Rule qc_report_sample: the self-contained QC page of one sample and its figures."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.qc import qc_report_sample

    qc_report_sample(
        cells_table=smk.input.cells,
        thresholds_json=smk.input.thresholds,
        sample=smk.wildcards.sample,
        html=smk.output.html,
        distributions_png=smk.output.distributions,
        doublets_png=smk.output.doublets,
        removed_png=smk.output.removed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
