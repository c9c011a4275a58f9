"""Rule annotation_figures: UMAP by cell type, marker dot plot, composition tables and bars."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.annotate import annotation_figures

    annotation_figures(
        integrated_h5ad=smk.input.h5ad,
        markers=smk.input.markers,
        composition_table=smk.output.composition,
        by_condition_table=smk.output.by_condition,
        umap_png=smk.output.umap,
        dotplot_png=smk.output.dotplot,
        bars_png=smk.output.bars,
        methods=list(smk.params.methods),
        seed=int(smk.params.seed),
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
