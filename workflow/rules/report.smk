# Report stage: the aggregated self-contained results/report.html (report_html), MultiQC
# custom-content files of the per-sample QC (multiqc_content) and, with multiqc.run: true, an
# offline MultiQC report over them (multiqc_run).
# The report reads only the stages' small tables and figures, never the cohort h5ad. It needs the
# other stages' names: ANNOTATION_SETTINGS (annotation.smk), DE_CONTRASTS (de.smk).

REPORT_HTML = f"{RESULTS}/report.html"
MULTIQC_DIR = f"{RESULTS}/multiqc"
MULTIQC_CONTENT = {
    "general_stats": f"{MULTIQC_DIR}/sccohort_general_stats_mqc.tsv",
    "qc_table": f"{MULTIQC_DIR}/sccohort_qc_mqc.tsv",
    "cells": f"{MULTIQC_DIR}/sccohort_cells_mqc.tsv",
}
MULTIQC_REPORT = f"{MULTIQC_DIR}/multiqc_report.html"
REPORT_OUTPUTS = [REPORT_HTML, *MULTIQC_CONTENT.values()] + (
    [MULTIQC_REPORT] if config["multiqc"]["run"] else []
)
# Optional inputs: the exports (EXPORT_OUTPUTS, export.smk) the report links to; method agreement
# exists only when more than one annotation method runs; DE only when contrasts are configured (each contrast's folder: its tables and the figures/ the
# report embeds, volcano plots and heat map, are known only once de_contrast has run).
REPORT_OPTIONAL_INPUTS = {
    **({"exports": EXPORT_OUTPUTS} if EXPORT_OUTPUTS else {}),
    **(
        {"method_agreement": f"{RESULTS}/annotation/method_agreement.tsv"}
        if len(ANNOTATION_SETTINGS["methods"]) > 1
        else {}
    ),
    **(
        {
            "de_summary": f"{RESULTS}/de/summary.tsv",
            "de_dirs": [f"{RESULTS}/de/{c['name']}" for c in DE_CONTRASTS],
            "composition_tests": [
                f"{RESULTS}/composition/{c['name']}.tsv" for c in DE_CONTRASTS
            ],
            "de_metadata": f"{RESULTS}/de/pseudobulk/metadata.tsv",
        }
        if DE_CONTRASTS
        else {}
    ),
}
# Input files whose checksums the report records (a 10x mtx directory: every file inside).
REPORT_CHECKSUM_PATHS = {
    **{f"sample {s}": samples.loc[s, "path"] for s in SAMPLES},
    "sample sheet": config["samples"],
    "marker table": ANNOTATION_SETTINGS["markers"],
    **{
        f"annotation {key}": ANNOTATION_SETTINGS[key]
        for key in ("celltypist_model", "reference")
        if ANNOTATION_SETTINGS[key]
    },
}
# all_outputs() in common.smk calls report_outputs(). A lambda, not a function: `snakemake --lint`
# flags rule files that define functions.
report_outputs = lambda: list(REPORT_OUTPUTS)


rule report_html:
    input:
        **REPORT_OPTIONAL_INPUTS,
        thresholds=expand(f"{RESULTS}/qc/{{sample}}/thresholds.json", sample=SAMPLES),
        cells=expand(f"{RESULTS}/qc/{{sample}}/cells.tsv.gz", sample=SAMPLES),
        qc_pages=expand(f"{RESULTS}/qc/{{sample}}/report.html", sample=SAMPLES),
        qc_summary=f"{RESULTS}/qc/summary.html",
        merge_summary=f"{RESULTS}/cohort/merge_summary.tsv",
        umap=f"{RESULTS}/cohort/umap_coords.tsv.gz",
        umap_uncorrected=f"{RESULTS}/cohort/umap_pca_coords.tsv.gz",
        integration_metrics=f"{RESULTS}/cohort/integration_metrics.tsv",
        integration_plot=f"{RESULTS}/cohort/figures/integration_metrics.png",
        markers=f"{RESULTS}/cohort/markers.tsv",
        cluster_dotplot=f"{RESULTS}/cohort/figures/marker_dotplot.png",
        cluster_annotation=f"{RESULTS}/annotation/cluster_annotation.tsv",
        cluster_composition=f"{RESULTS}/annotation/cluster_composition.tsv",
        cell_types=f"{RESULTS}/annotation/cell_types.tsv.gz",
        missing_markers=f"{RESULTS}/annotation/missing_markers.tsv",
        composition=f"{RESULTS}/annotation/composition.tsv",
        composition_by_condition=f"{RESULTS}/annotation/composition_by_condition.tsv",
        celltype_dotplot=f"{RESULTS}/annotation/figures/marker_dotplot.png",
        composition_plot=f"{RESULTS}/annotation/figures/composition.png",
    output:
        html=report(
            REPORT_HTML,
            caption="../report/report_html.rst",
            category="5. Report",
            subcategory="Aggregated report",
            labels={"file": "report.html"},
        ),
    log:
        "logs/report/report_html.log",
    benchmark:
        "benchmarks/report/report_html.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1500, 4),
        runtime=runtime_from_input(10, 0.2),
    params:
        samples=SAMPLES,
        sheet=lambda wildcards: samples.fillna("").astype(str).to_dict("records"),
        config=config,
        contrasts=DE_CONTRASTS,
        annotation_key=ANNOTATION_SETTINGS["cluster_key"],
        checksum_paths=REPORT_CHECKSUM_PATHS,
    script:
        "../../scripts/report_html.py"


rule multiqc_content:
    input:
        thresholds=expand(f"{RESULTS}/qc/{{sample}}/thresholds.json", sample=SAMPLES),
        cells=expand(f"{RESULTS}/qc/{{sample}}/cells.tsv.gz", sample=SAMPLES),
    output:
        general_stats=report(
            MULTIQC_CONTENT["general_stats"],
            caption="../report/report_multiqc.rst",
            category="5. Report",
            subcategory="MultiQC",
            labels={"file": "general statistics"},
        ),
        qc_table=report(
            MULTIQC_CONTENT["qc_table"],
            caption="../report/report_multiqc.rst",
            category="5. Report",
            subcategory="MultiQC",
            labels={"file": "QC table"},
        ),
        cells=report(
            MULTIQC_CONTENT["cells"],
            caption="../report/report_multiqc.rst",
            category="5. Report",
            subcategory="MultiQC",
            labels={"file": "cells kept and removed"},
        ),
    log:
        "logs/report/multiqc_content.log",
    benchmark:
        "benchmarks/report/multiqc_content.tsv"
    conda:
        "../../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 4),
        runtime=runtime_from_input(5, 0.1),
    params:
        samples=SAMPLES,
    script:
        "../../scripts/multiqc_content.py"


rule multiqc_run:
    input:
        list(MULTIQC_CONTENT.values()),
    output:
        html=report(
            MULTIQC_REPORT,
            caption="../report/report_multiqc_run.rst",
            category="5. Report",
            subcategory="MultiQC",
            labels={"file": "MultiQC report"},
        ),
    log:
        "logs/report/multiqc_run.log",
    benchmark:
        "benchmarks/report/multiqc_run.tsv"
    conda:
        "../../envs/multiqc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(2000, 10),
        runtime=runtime_from_input(10, 1),
    script:
        "../../scripts/multiqc_run.py"


rule report:
    default_target: False
    input:
        report_outputs(),
