"""Rule composition_test: propeller on the cells per sample x group for one contrast; table and figure."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.de import composition_test

    composition_test(
        metadata=smk.input.metadata,
        output=smk.output.table,
        figure=smk.output.figure,
        contrast=smk.params.contrast,
        de_options=smk.params.de,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
