# Export stage: the results in the formats other tools open. export_cellxgene writes
# results/export/cellxgene.h5ad in the CELLxGENE schema (with the genes it dropped and a summary
# beside it); export_cellbrowser builds results/cellbrowser/, a static UCSC Cell Browser site.
# Both read results/cohort/integrated.h5ad. The export block and the per-sample CELLxGENE
# metadata (sheet columns or export.cellxgene_metadata) are resolved and checked here, before any
# job runs.

# common.smk puts scripts/ on sys.path.
from sccohort import export as export_lib

try:
    EXPORT_SETTINGS = export_lib.check_export_config(config, samples, SCCOHORT_ROOT)
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None

EXPORT = f"{RESULTS}/export"
CELLBROWSER = f"{RESULTS}/cellbrowser"
EXPORT_OUTPUTS = (
    [
        f"{EXPORT}/cellxgene.h5ad",
        f"{EXPORT}/cellxgene_dropped_genes.tsv",
        f"{EXPORT}/cellxgene_summary.json",
    ]
    if EXPORT_SETTINGS["cellxgene"]
    else []
) + ([CELLBROWSER] if EXPORT_SETTINGS["cellbrowser"] else [])
# all_outputs() in common.smk calls export_outputs(). A lambda, not a function: `snakemake --lint`
# flags rule files that define functions.
export_outputs = lambda: list(EXPORT_OUTPUTS)


rule export_cellxgene:
    input:
        h5ad=f"{RESULTS}/cohort/integrated.h5ad",
        markers=ANNOTATION_SETTINGS["markers"],
        gene_reference=EXPORT_SETTINGS.get("gene_reference", []),
    output:
        h5ad=f"{EXPORT}/cellxgene.h5ad",
        dropped=report(
            f"{EXPORT}/cellxgene_dropped_genes.tsv",
            caption="../report/export_cellxgene.rst",
            category="6. Export",
            subcategory="CELLxGENE",
            labels={"table": "genes dropped from the CELLxGENE export"},
        ),
        summary=f"{EXPORT}/cellxgene_summary.json",
    log:
        "logs/export/export_cellxgene.log",
    benchmark:
        "benchmarks/export/export_cellxgene.tsv"
    conda:
        "../../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(2000, 6),
        runtime=runtime_from_input(10, 0.05),
    params:
        settings={k: v for k, v in EXPORT_SETTINGS.items() if k not in ("cellbrowser",)},
    script:
        "../../scripts/export_cellxgene.py"


rule export_cellbrowser:
    input:
        # its uns["rank_genes_groups"] holds results/cohort/markers.tsv
        h5ad=f"{RESULTS}/cohort/integrated.h5ad",
    output:
        site=directory(CELLBROWSER),
    log:
        "logs/export/export_cellbrowser.log",
    benchmark:
        "benchmarks/export/export_cellbrowser.tsv"
    conda:
        "../../envs/export.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(2000, 6),
        runtime=runtime_from_input(15, 0.2),
    params:
        title=config["export"]["title"] or config["report"]["title"],
        # the clustering of results/cohort/markers.tsv, whose markers the browser lists
        cluster_key=leiden_key(config["cohort"]["default_resolution"]),
    script:
        "../../scripts/export_cellbrowser.py"


rule export:
    default_target: False
    input:
        export_outputs(),
