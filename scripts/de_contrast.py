"""Rule de_contrast: the test of de.method per group for one contrast; tables, figures, the summary."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.de import de_contrast

    de_contrast(
        counts=smk.input.counts,
        metadata=smk.input.metadata,
        output=smk.output[0],
        contrast=smk.params.contrast,
        de_options=smk.params.de,
        threads=smk.threads,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
