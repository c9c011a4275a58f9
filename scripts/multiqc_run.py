"""Rule multiqc_run: MultiQC over the custom-content files, offline (no version check, no AI)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.report import multiqc_run

    multiqc_run(inputs=list(smk.input), output=smk.output.html, log=log)


run_rule(main, snakemake)  # noqa: F821
