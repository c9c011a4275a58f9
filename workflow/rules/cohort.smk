# Cohort stage: merge the QC-passed samples -> normalise -> HVG -> PCA (cohort_merge);
# Harmony -> kNN graph -> UMAP -> Leiden (cohort_cluster), and beside it the kNN graph and UMAP
# of the uncorrected PCs (cohort_uncorrected, only with integration); integration diagnostics
# and UMAP figures (cohort_diagnostics); marker genes (cohort_markers).
# The final object is results/cohort/clustered.h5ad; the annotation stage adds cell types to
# it and writes results/cohort/integrated.h5ad.

COHORT = f"{RESULTS}/cohort"
COHORT_FIGURES = f"{COHORT}/figures"
COHORT_OUTPUTS = [
    f"{COHORT}/clustered.h5ad",
    f"{COHORT}/merge_summary.tsv",
    f"{COHORT}/umap_coords.tsv.gz",
    f"{COHORT}/umap_pca_coords.tsv.gz",
    f"{COHORT}/integration_metrics.tsv",
    f"{COHORT}/markers.tsv",
    f"{COHORT_FIGURES}/umap_sample.png",
    f"{COHORT_FIGURES}/umap_batch.png",
    f"{COHORT_FIGURES}/umap_condition.png",
    f"{COHORT_FIGURES}/umap_clusters.png",
    f"{COHORT_FIGURES}/umap_before_after_integration.png",
    f"{COHORT_FIGURES}/integration_metrics.png",
    f"{COHORT_FIGURES}/marker_dotplot.png",
]
# Whether Harmony can run: it needs two levels of some batch key, so a sheet with one (a
# one-sample pilot) skips it, and cohort_uncorrected's graph and UMAP (the same as the clustering's
# then) are not made. (QC dropping samples can still leave one level: cohort_diagnostics then
# ignores cohort_uncorrected's output.)
COHORT_INTEGRATES = config["cohort"]["integration"] != "none" and any(
    samples[key].astype(str).nunique() > 1 for key in config["cohort"]["batch_keys"]
)
# all_outputs() in common.smk calls cohort_outputs(). Lambdas, not functions: `snakemake --lint`
# flags rule files that define functions.
cohort_outputs = lambda: list(COHORT_OUTPUTS)


rule cohort_merge:
    input:
        h5ads=lambda wildcards: expand(
            f"{RESULTS}/qc/{{sample}}/filtered.h5ad", sample=qc_passed_samples()
        ),
    output:
        h5ad=f"{COHORT}/pca.h5ad",
        summary=report(
            f"{COHORT}/merge_summary.tsv",
            caption="../report/cohort_merge.rst",
            category="2. Cohort",
            subcategory="Merge",
            labels={"table": "samples merged"},
        ),
    log:
        "logs/cohort/cohort_merge.log",
    benchmark:
        "benchmarks/cohort/cohort_merge.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb_from_input(2000, 10),
        runtime=runtime_from_input(15, 0.05),
    params:
        samples=lambda wildcards: list(qc_passed_samples()),
        # sheet covariates of the merged samples, written to obs
        sheet=lambda wildcards: {
            s: samples.loc[s, sample_sheet.covariate_columns(samples)].to_dict()
            for s in qc_passed_samples()
        },
        cohort=config["cohort"],
        qc={
            "mt_prefix": config["qc"]["mt_prefix"],
            "ribo_prefixes": config["qc"]["ribo_prefixes"],
            "min_samples_kept": config["qc"]["min_samples_kept"],
        },
        seed=SEED,
    script:
        "../../scripts/cohort_merge.py"


# cohort_cluster and cohort_uncorrected are single-threaded on purpose: UMAP with a seed runs on
# one thread, so two one-thread jobs side by side use two cores where one two-thread job would
# leave one idle.
rule cohort_cluster:
    input:
        h5ad=f"{COHORT}/pca.h5ad",
    output:
        h5ad=f"{COHORT}/clustered.h5ad",
        umap=f"{COHORT}/umap_coords.tsv.gz",
    log:
        "logs/cohort/cohort_cluster.log",
    benchmark:
        "benchmarks/cohort/cohort_cluster.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(3000, 4),
        runtime=runtime_from_input(20, 0.1),
    params:
        cohort=config["cohort"],
        seed=SEED,
    script:
        "../../scripts/cohort_cluster.py"


rule cohort_uncorrected:
    input:
        h5ad=f"{COHORT}/pca.h5ad",
    output:
        h5ad=f"{COHORT}/uncorrected.h5ad",
    log:
        "logs/cohort/cohort_uncorrected.log",
    benchmark:
        "benchmarks/cohort/cohort_uncorrected.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(2000, 1),
        runtime=runtime_from_input(20, 0.05),
    params:
        cohort=config["cohort"],
        seed=SEED,
    script:
        "../../scripts/cohort_uncorrected.py"


rule cohort_diagnostics:
    input:
        h5ad=f"{COHORT}/clustered.h5ad",
        # with integration, the "before" graph and UMAP come from cohort_uncorrected
        uncorrected=branch(COHORT_INTEGRATES, then=f"{COHORT}/uncorrected.h5ad"),
    output:
        umap_pca=f"{COHORT}/umap_pca_coords.tsv.gz",
        metrics=report(
            f"{COHORT}/integration_metrics.tsv",
            caption="../report/cohort_integration_metrics.rst",
            category="2. Cohort",
            subcategory="Integration",
            labels={"table": "integration metrics"},
        ),
        metrics_plot=report(
            f"{COHORT_FIGURES}/integration_metrics.png",
            caption="../report/cohort_integration_metrics.rst",
            category="2. Cohort",
            subcategory="Integration",
            labels={"figure": "integration metrics"},
        ),
        before_after=report(
            f"{COHORT_FIGURES}/umap_before_after_integration.png",
            caption="../report/cohort_before_after.rst",
            category="2. Cohort",
            subcategory="Integration",
            labels={"figure": "UMAP before/after integration"},
        ),
        by_sample=report(
            f"{COHORT_FIGURES}/umap_sample.png",
            caption="../report/cohort_umap.rst",
            category="2. Cohort",
            subcategory="UMAP",
            labels={"figure": "UMAP", "colour": "sample"},
        ),
        by_batch=report(
            f"{COHORT_FIGURES}/umap_batch.png",
            caption="../report/cohort_umap.rst",
            category="2. Cohort",
            subcategory="UMAP",
            labels={"figure": "UMAP", "colour": "batch"},
        ),
        by_condition=report(
            f"{COHORT_FIGURES}/umap_condition.png",
            caption="../report/cohort_umap.rst",
            category="2. Cohort",
            subcategory="UMAP",
            labels={"figure": "UMAP", "colour": "condition"},
        ),
        by_cluster=report(
            f"{COHORT_FIGURES}/umap_clusters.png",
            caption="../report/cohort_umap_clusters.rst",
            category="2. Cohort",
            subcategory="UMAP",
            labels={"figure": "UMAP", "colour": "Leiden clusters"},
        ),
    log:
        "logs/cohort/cohort_diagnostics.log",
    benchmark:
        "benchmarks/cohort/cohort_diagnostics.tsv"
    conda:
        "../../envs/cohort.yaml"
    threads: 1
    resources:
        # jax (scib-metrics) alone takes ~1 GB
        mem_mb=mem_mb_from_input(2500, 1),
        runtime=runtime_from_input(10, 0.02),
    params:
        cohort=config["cohort"],
        seed=SEED,
    script:
        "../../scripts/cohort_diagnostics.py"


rule cohort_markers:
    input:
        h5ad=f"{COHORT}/clustered.h5ad",
    output:
        markers=report(
            f"{COHORT}/markers.tsv",
            caption="../report/cohort_markers.rst",
            category="2. Cohort",
            subcategory="Markers",
            labels={"table": "marker genes"},
        ),
        dotplot=report(
            f"{COHORT_FIGURES}/marker_dotplot.png",
            caption="../report/cohort_markers.rst",
            category="2. Cohort",
            subcategory="Markers",
            labels={"figure": "marker dot plot"},
        ),
    log:
        "logs/cohort/cohort_markers.log",
    benchmark:
        "benchmarks/cohort/cohort_markers.tsv"
    conda:
        "../../envs/cohort.yaml"
    # illico runs the Wilcoxon test on gene batches in threads
    threads: 2
    resources:
        mem_mb=mem_mb_from_input(2000, 3),
        runtime=runtime_from_input(20, 0.1),
    params:
        cohort=config["cohort"],
    script:
        "../../scripts/cohort_markers.py"


rule cohort:
    default_target: False
    input:
        cohort_outputs(),
