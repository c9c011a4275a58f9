"""Rule annotate_cells: marker-based cell types of every cell (+ optional CellTypist model and
reference label transfer, and their consensus) for the clustered cohort; writes
results/cohort/integrated.h5ad and the label tables."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.annotate import annotate_cells

    annotate_cells(
        clustered_h5ad=smk.input.h5ad,
        markers=smk.input.markers,
        output_h5ad=smk.output.h5ad,
        clusters_table=smk.output.clusters,
        missing_table=smk.output.missing,
        composition_table=smk.output.composition,
        cells_table=smk.output.cells,
        agreement_table=smk.output.get("agreement"),
        cluster_markers=smk.input.get("cluster_markers"),
        celltypist_model=smk.input.get("celltypist_model"),
        reference=smk.input.get("reference"),
        cohort_markers=smk.input.cohort_markers,
        markers_cluster_key=smk.params.markers_cluster_key,
        sample_order=smk.params.samples,
        cluster_key=smk.params.cluster_key,
        options=smk.params.annotation,
        seed=int(smk.params.seed),
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
