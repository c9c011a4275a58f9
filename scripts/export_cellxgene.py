"""Rule export_cellxgene: results/cohort/integrated.h5ad in the CELLxGENE schema
(results/export/cellxgene.h5ad), with the genes dropped for lack of a reference id."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.export import export_cellxgene

    export_cellxgene(
        integrated_h5ad=smk.input.h5ad,
        markers=smk.input.markers,
        output_h5ad=smk.output.h5ad,
        dropped_genes=smk.output.dropped,
        summary_json=smk.output.summary,
        settings=smk.params.settings,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
