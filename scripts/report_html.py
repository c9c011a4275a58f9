"""Rule report_html: the aggregated, self-contained results/report.html."""

from sccohort.runtime import run_rule


def main(smk, log):
    import pandas as pd
    from sccohort import report
    from sccohort.runtime import atomic_path, package_versions

    params = smk.params
    samples = list(params.samples)
    inputs = smk.input
    agreement = inputs.get("method_agreement")
    de_summary = inputs.get("de_summary")
    report_inputs = report.ReportInputs(
        thresholds=dict(zip(samples, inputs.thresholds, strict=True)),
        cells=dict(zip(samples, inputs.cells, strict=True)),
        qc_pages=dict(zip(samples, inputs.qc_pages, strict=True)),
        umap=inputs.umap,
        umap_uncorrected=inputs.umap_uncorrected,
        integration_metrics=inputs.integration_metrics,
        integration_plot=inputs.integration_plot,
        merge_summary=inputs.merge_summary,
        markers=inputs.markers,
        cluster_dotplot=inputs.cluster_dotplot,
        cluster_annotation=inputs.cluster_annotation,
        missing_markers=inputs.missing_markers,
        composition=inputs.composition,
        composition_by_condition=inputs.composition_by_condition,
        celltype_dotplot=inputs.celltype_dotplot,
        composition_plot=inputs.composition_plot,
        method_agreement=agreement if agreement else None,
        de_summary=de_summary if de_summary else None,
        de_dirs={c["name"]: d for c, d in zip(params.contrasts, inputs.get("de_dirs", []), strict=True)},
    )
    sheet = pd.DataFrame(params.sheet).set_index("sample")
    text = report.build_report(
        report_inputs,
        config=params.config,
        sheet=sheet,
        versions=package_versions(),
        checksum_paths=params.checksum_paths,
        report_path=smk.output.html,
        contrasts=params.contrasts,
        annotation_key=params.annotation_key,
    )
    with atomic_path(smk.output.html) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("Wrote %s (%.1f MB).", smk.output.html, len(text.encode("utf-8")) / 1e6)


run_rule(main, snakemake)  # noqa: F821
