"""Rule report_html: the aggregated, self-contained results/report.html."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.report import report_html

    inputs, params = smk.input, smk.params
    report_html(
        samples=params.samples,
        thresholds=inputs.thresholds,
        cells=inputs.cells,
        qc_pages=inputs.qc_pages,
        umap=inputs.umap,
        umap_uncorrected=inputs.umap_uncorrected,
        integration_metrics=inputs.integration_metrics,
        integration_plot=inputs.integration_plot,
        merge_summary=inputs.merge_summary,
        markers=inputs.markers,
        cluster_dotplot=inputs.cluster_dotplot,
        cluster_annotation=inputs.cluster_annotation,
        cluster_composition=inputs.cluster_composition,
        cell_types=inputs.cell_types,
        missing_markers=inputs.missing_markers,
        composition=inputs.composition,
        composition_by_condition=inputs.composition_by_condition,
        celltype_dotplot=inputs.celltype_dotplot,
        composition_plot=inputs.composition_plot,
        method_agreement=inputs.get("method_agreement"),
        de_summary=inputs.get("de_summary"),
        de_dirs=inputs.get("de_dirs", []),
        composition_tests=inputs.get("composition_tests", []),
        de_metadata=inputs.get("de_metadata"),
        qc_summary=inputs.get("qc_summary"),
        output=smk.output.html,
        sheet=params.sheet,
        config=params.config,
        contrasts=params.contrasts,
        annotation_key=params.annotation_key,
        checksum_paths=params.checksum_paths,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
