"""Rule multiqc_content: per-sample QC numbers as MultiQC custom-content files (*_mqc.tsv)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.report import multiqc_content

    multiqc_content(
        samples=smk.params.samples,
        thresholds=smk.input.thresholds,
        cells=smk.input.cells,
        general_stats_output=smk.output.general_stats,
        qc_table_output=smk.output.qc_table,
        cells_output=smk.output.cells,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
