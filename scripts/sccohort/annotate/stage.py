"""The annotation stage's rules: annotate_cells (cell types for the clustered cohort, written into
results/cohort/integrated.h5ad, the final object) and annotation_figures (figures and composition
tables). Every configured method on one AnnData: sccohort.annotate.methods.run_annotation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .marker_table import match_markers, read_marker_table, resolve_marker_genes
from .methods import LABEL_COLUMNS, run_annotation
from .scanpy_uns import store_category_colours, store_rank_genes_groups

LOG = logging.getLogger("sccohort")

# Options of the marker method (config annotation block -> annotate_markers keyword), with defaults.
MARKER_OPTIONS = {
    "min_margin": 0.1,
    "min_score": 0.1,
    "unit_resolution": 1.0,
    "min_unit_cells": 20,
    "smoothing_steps": 2,
    "smoothing_weight": 0.5,
    "classifier": True,
    "min_training_cells": 10,
    "min_probability": 0.0,
    "classifier_pcs": 0,
}


def annotate_cells(
    *,
    clustered_h5ad: str | Path,
    markers: str | Path,
    output_h5ad: str | Path,
    clusters_table: str | Path,
    missing_table: str | Path,
    composition_table: str | Path | None = None,
    cells_table: str | Path | None = None,
    agreement_table: str | Path | None = None,
    cluster_markers: str | Path | None = None,
    celltypist_model: str | Path | None = None,
    reference: str | Path | None = None,
    cohort_markers: str | Path | None = None,
    markers_cluster_key: str | None = None,
    sample_order: Sequence[str] = (),
    cluster_key: str,
    options: Mapping,
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule annotate_cells: marker-based cell types of every cell (+ the optional CellTypist model
    and reference label transfer, and their consensus) for the clustered cohort.

    `options` is the config's annotation block (MARKER_OPTIONS, reference_label_key,
    reference_n_neighbors, min_vote_fraction, consensus_min_agreement; absent keys take their
    defaults). `cluster_markers`: cohort_markers' markers.tsv when it is of `cluster_key`'s
    clustering; the clusters' top genes are taken from it, and with the marker method alone only
    the marker genes' columns of X are read. Writes `output_h5ad` (the clustered object with the
    labels in obs and the colours and settings in uns), cluster_annotation.tsv, the missing
    markers, cluster_composition.tsv (`composition_table`), the per-cell labels (`cells_table`,
    keyed by the cohort's cell id like the UMAP tables) and, when more than one method runs,
    `agreement_table`.

    The object is written as scanpy would have made it: colours of every categorical in
    uns["<key>_colors"] (samples in `sample_order`, the sheet's), and `cohort_markers` (markers.tsv
    of the `markers_cluster_key` clustering) in uns["rank_genes_groups"]; see scanpy_uns.
    """
    from .. import plotting
    from ..runtime import package_versions, read_table, write_h5ad, write_h5ad_update, write_table

    table = read_marker_table(markers)
    present = _check_markers_against_file(table, clustered_h5ad, markers, log)
    top_genes_table = None
    if cluster_markers:
        top_genes_table = read_table(cluster_markers)  # cluster and gene as text
    # The marker method needs X of the marker genes only; CellTypist and reference transfer
    # need every gene, and the clusters' top genes need them unless cohort_markers has them.
    whole_matrix = top_genes_table is None or bool(celltypist_model) or bool(reference)
    genes = None if whole_matrix else list(dict.fromkeys(present["gene"]))
    adata = _read_clustered(clustered_h5ad, genes, log)
    tables = run_annotation(
        adata,
        table,
        cluster_key=cluster_key,
        marker_path=markers,
        celltypist_model=celltypist_model,
        reference=reference,
        reference_label_key=options.get("reference_label_key", "cell_type"),
        reference_n_neighbors=int(options.get("reference_n_neighbors", 15)),
        min_vote_fraction=float(options.get("min_vote_fraction", 0.0)),
        consensus_min_agreement=float(options.get("consensus_min_agreement", 0.6)),
        seed=int(seed),
        cluster_markers=top_genes_table,
        **marker_options(options),
    )
    log.info(
        "Cluster labels (%s):\n%s",
        cluster_key,
        tables["clusters"].drop(columns=["best_type_markers", "supporting_markers"]).to_string(index=False),
    )
    paths = {
        "clusters": clusters_table,
        "missing": missing_table,
        "composition": composition_table,
        "cells": cells_table,
        "agreement": agreement_table,
    }
    for name, path in paths.items():
        if path and name in tables:
            write_table(tables[name], path)
    if "agreement" in tables:
        log.info("Method agreement:\n%s", tables["agreement"].to_string(index=False))
    label_columns = ["cell_type_lineage", *adata.uns["annotation"]["methods"].values()]
    for column in dict.fromkeys(label_columns):
        plotting.store_colours(adata, column)  # the label columns are categorical: obs is unchanged
    coloured = store_category_colours(adata, sample_order=sample_order, skip=label_columns)
    log.info("Colours in uns for %s.", ", ".join(label_columns + coloured))
    if cohort_markers:
        marker_genes = read_table(cohort_markers)  # cluster and gene as text
        store_rank_genes_groups(adata, marker_genes, groupby=markers_cluster_key)
    adata.uns["annotation"]["versions"] = package_versions()
    if whole_matrix:
        write_h5ad(adata, output_h5ad)
    else:  # X, layers, var, obsm and obsp copied from clustered.h5ad as they are
        write_h5ad_update(clustered_h5ad, adata, output_h5ad, keys=("obs", "uns"))
    log.info("Cells per label:\n%s", adata.obs["cell_type"].value_counts().to_string())


def marker_options(options: Mapping) -> dict:
    """annotate_markers' keyword options from the config's annotation block (defaults where absent)."""
    merged = {**MARKER_OPTIONS, **{k: v for k, v in options.items() if k in MARKER_OPTIONS and v is not None}}
    out = {key: type(MARKER_OPTIONS[key])(value) for key, value in merged.items()}
    out["n_pcs"] = out.pop("classifier_pcs")
    return out


def _check_markers_against_file(table: pd.DataFrame, h5ad: str | Path, path: str | Path, log) -> pd.DataFrame:
    """The marker table's rows whose gene is in the .h5ad's var (read without the matrices, so a
    table matching no gene fails before the object is loaded), named as the data names them;
    logs the match and the absent genes."""
    from ..h5ad import read_var_names

    present, missing = match_markers(table, read_var_names(h5ad), path)
    log.info(
        "Marker table %s: %d cell types, %d genes, %d of them in the data.",
        path,
        table["cell_type"].nunique(),
        table["gene"].nunique(),
        present["gene"].nunique(),
    )
    if not missing.empty:
        log.warning("Marker genes absent from the data: %s", ", ".join(sorted(set(missing["gene"]))))
    return present


def _read_clustered(path: str | Path, genes: Sequence[str] | None, log):
    """The clustered object: whole (genes None), or obs, uns, the embeddings, the graphs and X of
    `genes` only."""
    import anndata as ad

    from ..h5ad import read_gene_columns, read_parts

    if genes is None:
        return ad.read_h5ad(path)
    base = read_parts(path, parts=("obs", "var", "obsm", "obsp", "uns"))
    adata = ad.AnnData(
        X=read_gene_columns(path, genes),
        obs=base.obs,
        var=base.var.loc[genes],
        obsm=dict(base.obsm),
        obsp=dict(base.obsp),
        uns=dict(base.uns),
    )
    log.info("Read X for the %d marker genes found in the data (not the whole matrix).", len(genes))
    return adata


def annotation_figures(
    *,
    integrated_h5ad: str | Path,
    markers: str | Path,
    composition_table: str | Path,
    by_condition_table: str | Path,
    umap_png: str | Path,
    dotplot_png: str | Path,
    bars_png: str | Path,
    methods: Sequence[str],
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule annotation_figures: composition per sample and per condition (tables and bars), UMAP
    by each method's cluster labels and the marker dot plot, from the annotated cohort.

    Reads obs, the UMAP and X of the marker genes only, not the whole matrix.
    """
    import anndata as ad

    from ..h5ad import read_gene_columns, read_parts
    from ..runtime import write_table
    from .composition import composition
    from .figures import plot_composition, plot_marker_dotplot, plot_umap_labels

    base = read_parts(integrated_h5ad, parts=("obs", "var", "obsm", "uns"))
    table = resolve_marker_genes(read_marker_table(markers), base.var_names)
    genes = list(dict.fromkeys(table.loc[table["gene"].isin(base.var_names), "gene"]))
    adata = ad.AnnData(
        X=read_gene_columns(integrated_h5ad, genes),
        obs=base.obs,
        var=base.var.loc[genes],
        obsm=dict(base.obsm),
        uns=dict(base.uns),
    )
    per_sample, per_condition = composition(adata.obs)
    write_table(per_sample, composition_table)
    write_table(per_condition, by_condition_table)
    keys = [LABEL_COLUMNS["markers"]] + [LABEL_COLUMNS[m] for m in methods if m != "markers"]
    if len(methods) > 1 and LABEL_COLUMNS["consensus"] in adata.obs:
        keys.append(LABEL_COLUMNS["consensus"])
    plot_umap_labels(adata, keys=keys, path=umap_png, seed=int(seed))
    plot_marker_dotplot(adata, table, path=dotplot_png)
    plot_composition(per_sample, per_condition, path=bars_png)
    log.info("Composition per condition:\n%s", per_condition.to_string(index=False))
