"""What each column of the report's tables means, shown under the table it appears in."""

from __future__ import annotations

from collections.abc import Iterable

COLUMN_NOTES = {
    # QC
    "cells in": "barcodes in the sample's input",
    "low counts": "barcodes below the lower total-counts threshold",
    "high counts": "barcodes above the upper total-counts threshold",
    "low genes": "barcodes below the lower genes-detected threshold",
    "high genes": "barcodes above the upper genes-detected threshold",
    "high % mito": "barcodes above the % mitochondrial threshold",
    "high pct other species": "barcodes above qc.max_pct_other_species (second-species genes)",
    "doublet": "cells removed as Scrublet doublets",
    "cells kept": "cells in filtered.h5ad (after QC thresholds and doublet removal)",
    "% kept": "cells kept as % of cells in",
    "median counts": "median total counts of the kept cells",
    "median genes": "median genes detected of the kept cells",
    "median % mito": "median % mitochondrial counts of the kept cells",
    "doublet rate %": "predicted doublets among the cells passing the QC thresholds",
    "expected doublet rate %": "the rate Scrublet was told to expect (10x: 0.8% per 1,000 cells)",
    "QC page": "the sample's own QC page: histograms with thresholds, Scrublet's scores",
    "status": "ok, dropped (too few cells after QC) or skipped doublet calling (DE: tested or skipped)",
    # cells at each step
    "after QC thresholds": "barcodes within every count, gene and % mito limit of their sample",
    "predicted doublets": "Scrublet doublets among those",
    "after doublet removal": "cells in filtered.h5ad",
    "in final object": "cells of results/cohort/integrated.h5ad",
    # annotation
    "cluster": "Leiden cluster id",
    "label": "the cluster's most frequent cell type (labels are decided per cell; Unknown: no type matches)",
    "labels": "every cell type of the cluster's cells, with their cells and share",
    "lineage": "the lineage of the label (T_NK: T and NK cells, told apart within it)",
    "n_cells": "cells in the cluster (composition: cells of the cluster with that label)",
    "fraction": "share of the cluster's cells with that label",
    "best_type": "the type the label's cells scored best for where it was decided",
    "score": "mean marker score of best_type against its sibling types (z units; subtypes among their lineage's cells)",
    "second_type": "the runner-up type at that level",
    "margin": "score minus second_score (a unit is Unknown below annotation.min_margin at the lineage level)",
    "cell_agreement": "share of the cells whose own label (smoothed scores) agrees with their sub-cluster's label",
    "mean_confidence": "mean per-cell confidence (classifier probability of the label; 0 for Unknown)",
    "top_markers": "the cluster's top data-driven marker genes (Wilcoxon, cohort stage)",
    "reason": "why the label was given (classifier, unit, a parent whose subtypes do not separate, why Unknown), or why a DE group was skipped",
    "supporting_markers": "the label's marker genes with a mean z-score >= 0.5 in its cells (gene:z)",
    "second_score": "mean marker score of second_type",
    "largest sample %": "share of the cluster's cells from its largest sample (near 100: sample-specific)",
    "cell type": "label of the cluster (annotation)",
    "total": "cells in the cluster, all samples",
    # markers
    "rank": "rank of the gene among the cluster's markers",
    "gene": "gene symbol",
    "logfoldchange": "log2 fold change, cluster vs all other cells",
    "pval_adj": "Benjamini-Hochberg adjusted p-value (Wilcoxon)",
    "pct_in": "% of the cluster's cells detecting the gene",
    "pct_out": "% of the other cells detecting the gene",
    # composition
    "n_samples": "samples of the condition",
    "% pooled": "% of all cells of the condition",
    "mean % of samples": "mean over the condition's samples of each sample's %",
    "SD % of samples": "standard deviation of those per-sample %",
    # integration
    "batch_mixing": "mean fraction of a cell's neighbours from other batches",
    "batch_mixing_expected": "the same for random neighbours within the cell's cluster",
    "batch_mixing_ratio": "batch_mixing / batch_mixing_expected (1: as mixed as random)",
    "cluster_purity": "mean fraction of a cell's neighbours in its own cluster (high: structure kept)",
    "label_purity_leiden_uncorrected": "the same for the clusters of the uncorrected graph (labels the "
    "correction did not make)",
    # DE
    "contrast": "the comparison (de.contrasts)",
    "group": "the cell type (or cluster) tested on its own",
    "samples (test / ref.)": "pseudobulk samples of the test and reference level",
    "cells (test / ref.)": "cells summed into those pseudobulk samples",
    "genes tested": "genes passing the per-group filter (de.min_counts in de.min_samples)",
    "up": "genes with padj < de.alpha and log2 fold change > 0 (higher in test)",
    "down": "genes with padj < de.alpha and log2 fold change < 0",
    "log2FoldChange": "log2 fold change, test vs reference (PyDESeq2)",
    "log2FoldChange_shrunk": "apeGLM-shrunk log2 fold change",
    "padj": "Benjamini-Hochberg adjusted p-value after independent filtering",
    "pvalue": "Wald test p-value",
    "baseMean": "mean of the normalised counts over the group's pseudobulk samples",
    "lfcSE": "standard error of the log2 fold change",
    "stat": "Wald statistic",
}


def column_notes(
    columns: Iterable[str], *, skip: Iterable[str] = ("sample", "condition")
) -> list[tuple[str, str]]:
    """(column, meaning) for the columns of one table that COLUMN_NOTES explains."""
    skip = set(skip)
    return [
        (c, COLUMN_NOTES[c]) for c in dict.fromkeys(map(str, columns)) if c in COLUMN_NOTES and c not in skip
    ]
