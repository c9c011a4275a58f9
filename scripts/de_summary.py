"""Rule de_summary: one table of every group x contrast, tested or skipped (with the reason)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.de import de_summary

    de_summary(contrast_folders=list(smk.input), output=smk.output[0], log=log)


run_rule(main, snakemake)  # noqa: F821
