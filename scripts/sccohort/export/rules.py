"""The export stage's rules: export_cellxgene (results/export/cellxgene.h5ad) and
export_cellbrowser (results/cellbrowser/, a static UCSC Cell Browser site)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path


def export_cellxgene(
    *,
    integrated_h5ad: str | Path,
    markers: str | Path,
    output_h5ad: str | Path,
    dropped_genes: str | Path,
    summary_json: str | Path,
    settings: Mapping,
    log: logging.Logger,
) -> None:
    """Rule export_cellxgene: the integrated object in the CELLxGENE schema.

    `settings`: check_export_config's resolved export settings (title, organism, gene_reference,
    cell_type_ontology, samples: per-sample metadata). `markers`: the marker table, whose optional
    cl_id column gives the Cell Ontology id of each cell type. Writes `output_h5ad`, the genes
    dropped for lack of a reference id (`dropped_genes`, a TSV) and `summary_json` (counts)."""
    import anndata as ad

    from ..runtime import write_h5ad, write_json, write_table
    from .cellxgene import build_cellxgene, read_cl_ids, read_gene_reference

    adata = ad.read_h5ad(integrated_h5ad)
    reference = read_gene_reference(settings["gene_reference"])
    out, dropped, summary = build_cellxgene(
        adata, reference=reference, settings=settings, cl_ids=read_cl_ids(markers)
    )
    log.info(
        "%d of %d genes kept; %d dropped (%s), listed in %s.",
        summary["n_genes_kept"],
        summary["n_genes_in"],
        summary["n_genes_dropped"],
        ", ".join(f"{n} {reason}" for reason, n in summary["genes_dropped_by_reason"].items()) or "none",
        dropped_genes,
    )
    if summary["labels_without_cell_ontology_id"]:
        log.warning(
            "Labels without a Cell Ontology id (cell_type_ontology_term_id 'unknown'): %s; add a cl_id to "
            "the marker table or an entry to export.cell_type_ontology.",
            ", ".join(summary["labels_without_cell_ontology_id"]),
        )
    write_table(dropped, dropped_genes)
    write_json(summary, summary_json)
    write_h5ad(out, output_h5ad)
    log.info("Wrote %s: %d cells x %d genes.", output_h5ad, out.n_obs, out.n_vars)


def export_cellbrowser(
    *,
    integrated_h5ad: str | Path,
    output_dir: str | Path,
    title: str,
    cluster_key: str,
    log: logging.Logger,
) -> None:
    """Rule export_cellbrowser: a static UCSC Cell Browser site of the cohort in `output_dir`
    (index.html and the dataset's files; serve the folder over HTTP to open it). `cluster_key`:
    the clustering of results/cohort/markers.tsv, stored in integrated.h5ad as uns["rank_genes_groups"]."""
    from .cellbrowser import build_cellbrowser

    build_cellbrowser(
        integrated_h5ad=integrated_h5ad,
        output_dir=output_dir,
        title=title,
        cluster_key=cluster_key,
        log=log,
    )
