"""Rule multiqc_content: per-sample QC numbers as MultiQC custom-content files (*_mqc.tsv)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import multiqc, report

    samples = list(smk.params.samples)
    thresholds = {s: report.read_json(p) for s, p in zip(samples, smk.input.thresholds, strict=True)}
    cells = {s: report.read_cells(p) for s, p in zip(samples, smk.input.cells, strict=True)}
    qc = report.qc_summary_table(thresholds, cells)
    multiqc.write_custom_content(
        qc,
        {
            "sccohort_general_stats_mqc.tsv": smk.output.general_stats,
            "sccohort_qc_mqc.tsv": smk.output.qc_table,
            "sccohort_cells_mqc.tsv": smk.output.cells,
        },
    )
    log.info("Wrote MultiQC custom content for %d samples.", len(qc))


run_rule(main, snakemake)  # noqa: F821
