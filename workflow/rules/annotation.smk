# Annotation stage: cell types for the clustered cohort (annotate_cells: marker scores, optional
# CellTypist model and reference label transfer, written into results/cohort/integrated.h5ad,
# the final object) and their figures and composition tables (annotation_figures).
# Paths in the annotation block are relative to the working directory; one that does not exist
# there but exists relative to the workflow's root (e.g. the shipped marker tables when the
# workflow runs with -d elsewhere) is taken from there. The marker table, the resolution and the
# optional files are checked here, before any job runs; that the marker table matches genes of
# the inputs is checked when annotate_cells enters the DAG (its input function), so targets that
# need no annotation (`snakemake qc`) run on data the table does not fit (Ensembl ids only).

# common.smk puts scripts/ on sys.path.
from sccohort import annotate as annotation_lib
from sccohort.names import leiden_key

try:
    ANNOTATION_SETTINGS = annotation_lib.check_annotation_config(config, SCCOHORT_ROOT)
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None
# The marker table, once it matched the inputs' genes (INPUT_GENE_SYMBOLS, common.smk; None in
# cluster jobs, which skip the check).
annotation_markers_matched = lambda wildcards: dag_check(
    annotation_lib.check_annotation_config,
    config,
    SCCOHORT_ROOT,
    None if INPUT_GENE_SYMBOLS is None else sorted(INPUT_GENE_SYMBOLS),
)["markers"]

ANNOTATION = f"{RESULTS}/annotation"
ANNOTATION_FIGURES = f"{ANNOTATION}/figures"
ANNOTATION_EXTRA_INPUTS = {
    key: ANNOTATION_SETTINGS[key]
    for key in ("celltypist_model", "reference")
    if ANNOTATION_SETTINGS[key]
}
# When annotation and cohort_markers use the same clustering, the clusters' top genes come from
# cohort_markers' table (no second Wilcoxon test on the whole matrix); with the marker method
# alone, annotate_cells then reads only the marker genes' columns of X.
ANNOTATION_CLUSTER_MARKERS = (
    {"cluster_markers": f"{RESULTS}/cohort/markers.tsv"}
    if ANNOTATION_SETTINGS["resolution"]
    == float(config["cohort"]["default_resolution"])
    else {}
)
# method_agreement.tsv exists only when more than one method runs.
ANNOTATION_AGREEMENT = (
    {
        "agreement": report(
            f"{ANNOTATION}/method_agreement.tsv",
            caption="../report/annotation_agreement.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"table": "method agreement"},
        )
    }
    if len(ANNOTATION_SETTINGS["methods"]) > 1
    else {}
)
ANNOTATION_OUTPUTS = [
    f"{RESULTS}/cohort/integrated.h5ad",
    f"{ANNOTATION}/cluster_annotation.tsv",
    f"{ANNOTATION}/cluster_composition.tsv",
    f"{ANNOTATION}/cell_types.tsv.gz",
    f"{ANNOTATION}/missing_markers.tsv",
    *[str(path) for path in ANNOTATION_AGREEMENT.values()],
    f"{ANNOTATION}/composition.tsv",
    f"{ANNOTATION}/composition_by_condition.tsv",
    f"{ANNOTATION_FIGURES}/umap_cell_type.png",
    f"{ANNOTATION_FIGURES}/marker_dotplot.png",
    f"{ANNOTATION_FIGURES}/composition.png",
]
# all_outputs() in common.smk calls annotation_outputs(). A lambda, not a function:
# `snakemake --lint` flags rule files that define functions.
annotation_outputs = lambda: list(ANNOTATION_OUTPUTS)


rule annotate_cells:
    input:
        **ANNOTATION_EXTRA_INPUTS,
        **ANNOTATION_CLUSTER_MARKERS,
        h5ad=f"{RESULTS}/cohort/clustered.h5ad",
        markers=annotation_markers_matched,
        # stored in the object as uns["rank_genes_groups"], scanpy's layout
        cohort_markers=f"{RESULTS}/cohort/markers.tsv",
    output:
        **ANNOTATION_AGREEMENT,
        h5ad=f"{RESULTS}/cohort/integrated.h5ad",
        clusters=report(
            f"{ANNOTATION}/cluster_annotation.tsv",
            caption="../report/annotation_clusters.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"table": "cluster labels"},
        ),
        missing=report(
            f"{ANNOTATION}/missing_markers.tsv",
            caption="../report/annotation_missing.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"table": "missing marker genes"},
        ),
        composition=report(
            f"{ANNOTATION}/cluster_composition.tsv",
            caption="../report/annotation_cluster_composition.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"table": "labels per cluster"},
        ),
        cells=f"{ANNOTATION}/cell_types.tsv.gz",
    log:
        "logs/annotation/annotate_cells.log",
    benchmark:
        "benchmarks/annotation/annotate_cells.tsv"
    conda:
        "../../envs/annotation.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb_from_input(2000, 8),
        runtime=runtime_from_input(15, 0.1),
    params:
        cluster_key=ANNOTATION_SETTINGS["cluster_key"],
        # the clustering of results/cohort/markers.tsv (cohort_markers)
        markers_cluster_key=leiden_key(config["cohort"]["default_resolution"]),
        # the sheet's order: samples are coloured as in the report
        samples=SAMPLES,
        annotation=config["annotation"],
        seed=SEED,
    script:
        "../../scripts/annotate_cells.py"


rule annotation_figures:
    input:
        h5ad=f"{RESULTS}/cohort/integrated.h5ad",
        markers=ANNOTATION_SETTINGS["markers"],
    output:
        composition=report(
            f"{ANNOTATION}/composition.tsv",
            caption="../report/annotation_composition.rst",
            category="3. Annotation",
            subcategory="Composition",
            labels={"table": "cells per sample and cell type"},
        ),
        by_condition=report(
            f"{ANNOTATION}/composition_by_condition.tsv",
            caption="../report/annotation_composition.rst",
            category="3. Annotation",
            subcategory="Composition",
            labels={"table": "cell-type fractions per condition"},
        ),
        umap=report(
            f"{ANNOTATION_FIGURES}/umap_cell_type.png",
            caption="../report/annotation_umap.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"figure": "UMAP by cell type"},
        ),
        dotplot=report(
            f"{ANNOTATION_FIGURES}/marker_dotplot.png",
            caption="../report/annotation_dotplot.rst",
            category="3. Annotation",
            subcategory="Labels",
            labels={"figure": "marker dot plot"},
        ),
        bars=report(
            f"{ANNOTATION_FIGURES}/composition.png",
            caption="../report/annotation_composition.rst",
            category="3. Annotation",
            subcategory="Composition",
            labels={"figure": "composition per sample and condition"},
        ),
    log:
        "logs/annotation/annotation_figures.log",
    benchmark:
        "benchmarks/annotation/annotation_figures.tsv"
    conda:
        "../../envs/annotation.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1500, 4),
        runtime=runtime_from_input(10, 0.05),
    params:
        methods=ANNOTATION_SETTINGS["methods"],
        seed=SEED,
    script:
        "../../scripts/annotate_figures.py"


rule annotation:
    default_target: False
    input:
        annotation_outputs(),
