"""Rule export_cellbrowser: a static UCSC Cell Browser site of the cohort (results/cellbrowser/)."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.export import export_cellbrowser

    export_cellbrowser(
        integrated_h5ad=smk.input.h5ad,
        output_dir=smk.output.site,
        title=smk.params.title,
        cluster_key=smk.params.cluster_key,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
