"""The annotation stage's rules: annotate_cells (cell types for the clustered cohort, written into
results/cohort/integrated.h5ad, the final object) and annotation_figures (figures and composition
tables), plus run_annotation, every configured method on one AnnData.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..names import SCORE_PREFIX, score_column
from .cluster_table import cluster_annotation_table, cluster_top_genes, top_genes_from_markers
from .marker_table import match_markers, parents_of, read_marker_table
from .scores import annotate_markers
from .voting import method_agreement

LOG = logging.getLogger("sccohort")

# obs column of the cluster labels of each method
LABEL_COLUMNS = {
    "markers": "cell_type",
    "celltypist": "cell_type_celltypist",
    "reference": "cell_type_reference",
}


def annotate_cells(
    *,
    clustered_h5ad: str | Path,
    markers: str | Path,
    output_h5ad: str | Path,
    clusters_table: str | Path,
    missing_table: str | Path,
    agreement_table: str | Path | None = None,
    cluster_markers: str | Path | None = None,
    celltypist_model: str | Path | None = None,
    reference: str | Path | None = None,
    cluster_key: str,
    options: Mapping,
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule annotate_cells: marker-based cell types (+ the optional CellTypist model and reference
    label transfer) for the clustered cohort.

    `options` is the config's annotation block (min_margin, min_score, reference_label_key,
    reference_n_neighbors, min_vote_fraction). `cluster_markers`: cohort_markers' markers.tsv when
    it is of `cluster_key`'s clustering; the clusters' top genes are taken from it, and with the
    marker method alone only the marker genes' columns of X are read. Writes `output_h5ad` (the
    clustered object with the labels in obs and the colours and settings in uns), the cluster and
    missing-marker tables and, when more than one method runs, `agreement_table`.
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
        min_margin=float(options["min_margin"]),
        min_score=float(options["min_score"]),
        marker_path=markers,
        celltypist_model=celltypist_model,
        reference=reference,
        reference_label_key=options["reference_label_key"],
        reference_n_neighbors=int(options["reference_n_neighbors"]),
        min_vote_fraction=float(options["min_vote_fraction"]),
        seed=int(seed),
        cluster_markers=top_genes_table,
    )
    clusters = tables["clusters"]
    log.info(
        "Cluster labels (%s):\n%s",
        cluster_key,
        clusters.drop(columns=["best_type_markers"]).to_string(index=False),
    )
    write_table(clusters, clusters_table)
    write_table(tables["missing"], missing_table)
    if "agreement" in tables:
        write_table(tables["agreement"], agreement_table)
        log.info("Method agreement:\n%s", tables["agreement"].to_string(index=False))
    for column in adata.uns["annotation"]["methods"].values():
        plotting.store_colours(adata, column)  # the label columns are categorical: obs is unchanged
    adata.uns["annotation"]["versions"] = package_versions()
    if whole_matrix:
        write_h5ad(adata, output_h5ad)
    else:  # X, layers, var, obsm and obsp copied from clustered.h5ad as they are
        write_h5ad_update(clustered_h5ad, adata, output_h5ad, keys=("obs", "uns"))
    log.info("Cells per label:\n%s", adata.obs["cell_type"].value_counts().to_string())


def _check_markers_against_file(table: pd.DataFrame, h5ad: str | Path, path: str | Path, log) -> pd.DataFrame:
    """The marker table's rows whose gene is in the .h5ad's var (read without the matrices, so a
    table matching no gene fails before the object is loaded); logs the match and the absent genes."""
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
    """The clustered object: whole (genes None), or obs, uns and X of `genes` only."""
    import anndata as ad

    from ..h5ad import read_gene_columns, read_parts

    if genes is None:
        return ad.read_h5ad(path)
    base = read_parts(path, parts=("obs", "var", "uns"))
    adata = ad.AnnData(
        X=read_gene_columns(path, genes), obs=base.obs, var=base.var.loc[genes], uns=dict(base.uns)
    )
    log.info("Read X for the %d marker genes found in the data (not the whole matrix).", len(genes))
    return adata


def run_annotation(
    adata,
    markers: pd.DataFrame,
    *,
    cluster_key: str,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    marker_path: str | Path = "marker table",
    celltypist_model: str | Path | None = None,
    reference: str | Path | None = None,
    reference_label_key: str = "cell_type",
    reference_n_neighbors: int = 15,
    min_vote_fraction: float = 0.0,
    n_top_genes: int = 5,
    seed: int = 0,
    cluster_markers: pd.DataFrame | None = None,
) -> dict:
    """All configured methods on `adata`, in place. Returns the tables to write: clusters,
    missing, and (when more than one method ran) agreement.

    Writes: what annotate_markers writes, annotate_celltypist's and annotate_reference's columns
    when their inputs are given, and uns["annotation"] (cluster_key, markers, min_margin,
    min_score, methods: method -> obs column of its cluster labels, score_columns, confidence).

    cluster_markers: cohort_markers' table for `cluster_key`; the clusters' top genes are taken
    from it instead of running the Wilcoxon test on X again (X may then hold the marker genes only).
    """
    table, missing = annotate_markers(
        adata,
        markers,
        cluster_key=cluster_key,
        min_margin=min_margin,
        min_score=min_score,
        marker_path=marker_path,
    )
    methods = {"markers": LABEL_COLUMNS["markers"]}
    if celltypist_model:
        from .celltypist import annotate_celltypist

        votes = annotate_celltypist(
            adata, model_path=celltypist_model, cluster_key=cluster_key, min_fraction=min_vote_fraction
        )
        methods["celltypist"] = LABEL_COLUMNS["celltypist"]
        LOG.info("CellTypist majority labels:\n%s", votes.to_string(index=False))
    if reference:
        from .reference import annotate_reference

        votes = annotate_reference(
            adata,
            reference_path=reference,
            label_key=reference_label_key,
            cluster_key=cluster_key,
            min_fraction=min_vote_fraction,
            seed=seed,
            n_neighbors=reference_n_neighbors,
        )
        methods["reference"] = LABEL_COLUMNS["reference"]
        LOG.info("Reference majority labels:\n%s", votes.to_string(index=False))
    top = _top_genes(adata, cluster_markers, cluster_key=cluster_key, n_genes=n_top_genes)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    out = {
        "clusters": cluster_annotation_table(table, top_genes=top, present_markers=present),
        "missing": missing,
    }
    if len(methods) > 1:
        out["agreement"] = _agreement(adata, markers, cluster_key=cluster_key, methods=methods)
    adata.uns["annotation"] = {
        "cluster_key": cluster_key,
        "markers": str(marker_path),
        "min_margin": float(min_margin),
        "min_score": float(min_score),
        "methods": methods,
        "score_columns": [score_column(t) for t in dict.fromkeys(markers["cell_type"])],
        "confidence": "cluster margin: best minus second-best mean marker score (z units)",
    }
    return out


def _top_genes(
    adata, cluster_markers: pd.DataFrame | None, *, cluster_key: str, n_genes: int
) -> dict[str, list[str]]:
    """Each cluster's top genes: from cohort_markers' table when given, else tested on X (none
    when n_genes is 0)."""
    if not n_genes:
        return {}
    if cluster_markers is not None:
        return top_genes_from_markers(cluster_markers, n_genes=n_genes)
    return cluster_top_genes(adata, cluster_key=cluster_key, n_genes=n_genes)


def _agreement(adata, markers: pd.DataFrame, *, cluster_key: str, methods: Mapping[str, str]) -> pd.DataFrame:
    """method_agreement with each method's per-cell labels (the marker method's: each cell's best
    type by score)."""
    scores = adata.obs[[score_column(t) for t in dict.fromkeys(markers["cell_type"])]]
    per_cell = {"markers": scores.idxmax(axis=1).str.slice(len(SCORE_PREFIX))}
    for name in methods:
        if f"cell_type_{name}_cell" in adata.obs:
            per_cell[name] = adata.obs[f"cell_type_{name}_cell"]
    return method_agreement(
        adata, cluster_key=cluster_key, methods=methods, per_cell=per_cell, parents=parents_of(markers)
    )


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

    table = read_marker_table(markers)
    base = read_parts(integrated_h5ad, parts=("obs", "var", "obsm", "uns"))
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
    plot_umap_labels(adata, keys=keys, path=umap_png, seed=int(seed))
    plot_marker_dotplot(adata, table, path=dotplot_png)
    plot_composition(per_sample, per_condition, path=bars_png)
    log.info("Composition per condition:\n%s", per_condition.to_string(index=False))
