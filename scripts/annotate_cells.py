"""Rule annotate_cells: marker-based cell types (+ optional CellTypist model and reference label
transfer) for the clustered cohort; writes results/cohort/integrated.h5ad and the label tables."""

from sccohort.runtime import run_rule


def main(smk, log):
    import anndata as ad
    import pandas as pd
    from sccohort import annotate, cohort
    from sccohort.runtime import package_versions, write_h5ad, write_h5ad_update, write_table

    options = smk.params.annotation
    markers_path = smk.input.markers
    markers = annotate.read_marker_table(markers_path)
    # Cheap check first: a marker table that matches no gene fails before the object is loaded.
    present, missing = annotate.match_markers(markers, annotate.read_var_names(smk.input.h5ad), markers_path)
    log.info(
        "Marker table %s: %d cell types, %d genes, %d of them in the data.",
        markers_path,
        markers["cell_type"].nunique(),
        markers["gene"].nunique(),
        present["gene"].nunique(),
    )
    if not missing.empty:
        log.warning("Marker genes absent from the data: %s", ", ".join(sorted(set(missing["gene"]))))
    cluster_markers = None
    if smk.input.get("cluster_markers"):
        cluster_markers = pd.read_csv(
            smk.input.cluster_markers, sep="\t", dtype={"cluster": str, "gene": str}
        )
    # The marker method needs X of the marker genes only; CellTypist and reference transfer
    # need every gene, and the clusters' top genes need them unless cohort_markers has them.
    whole_matrix = cluster_markers is None or smk.input.get("celltypist_model") or smk.input.get("reference")
    if whole_matrix:
        adata = ad.read_h5ad(smk.input.h5ad)
    else:
        genes = list(dict.fromkeys(present["gene"]))
        base = cohort.read_cohort(smk.input.h5ad, parts=("obs", "var", "uns"))
        adata = ad.AnnData(
            X=cohort.read_gene_columns(smk.input.h5ad, genes),
            obs=base.obs,
            var=base.var.loc[genes],
            uns=dict(base.uns),
        )
        log.info("Read X for the %d marker genes found in the data (not the whole matrix).", len(genes))
    tables = annotate.run_annotation(
        adata,
        markers,
        smk.params.cluster_key,
        min_margin=float(options["min_margin"]),
        min_score=float(options["min_score"]),
        marker_path=markers_path,
        celltypist_model=smk.input.get("celltypist_model"),
        reference=smk.input.get("reference"),
        reference_label_key=options["reference_label_key"],
        reference_n_neighbors=int(options["reference_n_neighbors"]),
        min_vote_fraction=float(options["min_vote_fraction"]),
        seed=int(smk.params.seed),
        cluster_markers=cluster_markers,
    )
    clusters = tables["clusters"]
    log.info(
        "Cluster labels (%s):\n%s",
        smk.params.cluster_key,
        clusters.drop(columns=["best_type_markers"]).to_string(index=False),
    )
    write_table(clusters, smk.output.clusters)
    write_table(tables["missing"], smk.output.missing)
    if "agreement" in tables:
        write_table(tables["agreement"], smk.output.agreement)
        log.info("Method agreement:\n%s", tables["agreement"].to_string(index=False))
    adata.uns["annotation"]["versions"] = package_versions()
    if whole_matrix:
        write_h5ad(adata, smk.output.h5ad)
    else:  # X, layers, var, obsm and obsp copied from clustered.h5ad as they are
        write_h5ad_update(smk.input.h5ad, adata, smk.output.h5ad, keys=("obs", "uns"))
    counts = adata.obs["cell_type"].value_counts()
    log.info("Cells per label:\n%s", counts.to_string())


run_rule(main, snakemake)  # noqa: F821
