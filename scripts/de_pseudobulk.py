"""Rule de_pseudobulk: sum raw counts per sample x group of the integrated, annotated cohort."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort.de import de_pseudobulk

    de_pseudobulk(
        integrated_h5ad=smk.input.h5ad,
        counts_output=smk.output.counts,
        metadata_output=smk.output.metadata,
        group_by=smk.params.group_by,
        layer=smk.params.layer,
        min_cells=smk.params.min_cells,
        covariates=smk.params.covariates,
        required=smk.params.required,
        log=log,
    )


run_rule(main, snakemake)  # noqa: F821
