# Per-sample stage: load -> QC metrics and thresholds -> doublets -> per-sample report.
# Each job reads one sample only, so its memory scales with that sample, not the cohort.


rule load_sample:
    input:
        matrix=sample_input,
    output:
        h5ad=temp(f"{RESULTS}/qc/{{sample}}/raw.h5ad"),
    log:
        "logs/qc/{sample}/load_sample.log",
    benchmark:
        "benchmarks/qc/{sample}/load_sample.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 40),
        runtime=runtime_from_input(10, 0.5),
    params:
        sample_row=sample_row,
        covariates=sample_sheet.covariate_columns(samples),
    script:
        "../../scripts/load_sample.py"


rule qc_sample:
    input:
        h5ad=f"{RESULTS}/qc/{{sample}}/raw.h5ad",
    output:
        h5ad=temp(f"{RESULTS}/qc/{{sample}}/qc_metrics.h5ad"),
    log:
        "logs/qc/{sample}/qc_sample.log",
    benchmark:
        "benchmarks/qc/{sample}/qc_sample.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 6),
        runtime=runtime_from_input(10, 0.1),
    params:
        sample_row=sample_row,
        qc=config["qc"],
        override_columns=list(sample_sheet.OVERRIDE_COLUMNS),
        seed=SEED,
    script:
        "../../scripts/qc_sample.py"


rule doublets_sample:
    input:
        h5ad=f"{RESULTS}/qc/{{sample}}/qc_metrics.h5ad",
    output:
        h5ad=f"{RESULTS}/qc/{{sample}}/filtered.h5ad",
        cells=report(
            f"{RESULTS}/qc/{{sample}}/cells.tsv.gz",
            caption="../report/qc_cells.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "table": "cells"},
        ),
        thresholds=report(
            f"{RESULTS}/qc/{{sample}}/thresholds.json",
            caption="../report/qc_thresholds.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "table": "thresholds and status"},
        ),
    log:
        "logs/qc/{sample}/doublets_sample.log",
    benchmark:
        "benchmarks/qc/{sample}/doublets_sample.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(2000, 30),
        runtime=runtime_from_input(15, 0.5),
    params:
        sample_row=sample_row,
        qc=config["qc"],
        doublets=config["doublets"],
        seed=SEED,
    script:
        "../../scripts/doublets_sample.py"


rule qc_report_sample:
    input:
        cells=f"{RESULTS}/qc/{{sample}}/cells.tsv.gz",
        thresholds=report(
            f"{RESULTS}/qc/{{sample}}/thresholds.json",
            caption="../report/qc_thresholds.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "table": "thresholds and status"},
        ),
    output:
        html=report(
            f"{RESULTS}/qc/{{sample}}/report.html",
            caption="../report/qc_report.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "QC page"},
        ),
        distributions=report(
            f"{RESULTS}/qc/{{sample}}/figures/qc_distributions.png",
            caption="../report/qc_distributions.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "distributions"},
        ),
        doublets=report(
            f"{RESULTS}/qc/{{sample}}/figures/doublet_scores.png",
            caption="../report/qc_doublets.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "doublet scores"},
        ),
        removed=report(
            f"{RESULTS}/qc/{{sample}}/figures/cells_removed.png",
            caption="../report/qc_removed.rst",
            category="1. Quality control",
            subcategory="{sample}",
            labels={"sample": "{sample}", "figure": "cells removed"},
        ),
    log:
        "logs/qc/{sample}/qc_report_sample.log",
    benchmark:
        "benchmarks/qc/{sample}/qc_report_sample.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 20),
        runtime=runtime_from_input(10, 0.5),
    script:
        "../../scripts/qc_report_sample.py"


rule qc_summary:
    input:
        thresholds=expand(f"{RESULTS}/qc/{{sample}}/thresholds.json", sample=SAMPLES),
        cells=expand(f"{RESULTS}/qc/{{sample}}/cells.tsv.gz", sample=SAMPLES),
    output:
        html=report(
            f"{RESULTS}/qc/summary.html",
            caption="../report/qc_summary.rst",
            category="1. Quality control",
            labels={"figure": "QC summary, all samples"},
        ),
        table=f"{RESULTS}/qc/summary.tsv",
        metrics=f"{RESULTS}/qc/figures/summary_metrics.png",
        removed=f"{RESULTS}/qc/figures/summary_removed.png",
    log:
        "logs/qc/qc_summary.log",
    benchmark:
        "benchmarks/qc/qc_summary.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 8),
        runtime=runtime_from_input(10, 0.2),
    params:
        samples=SAMPLES,
    script:
        "../../scripts/qc_summary.py"


rule qc:
    default_target: False
    input:
        qc_outputs(),
