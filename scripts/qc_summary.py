"""Rule qc_summary: every sample's QC side by side (results/qc/summary.html and summary.tsv)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.qc import qc_summary

    qc_summary(
        thresholds_jsons=list(smk.input.thresholds),
        cells_tables=list(smk.input.cells),
        samples=list(smk.params.samples),
        html=smk.output.html,
        table=smk.output.table,
        metrics_png=smk.output.metrics,
        removed_png=smk.output.removed,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
