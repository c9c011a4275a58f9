"""Rule cohort_merge: merge the QC-passed samples, normalise, select HVGs, PCA."""

from sccohort.runtime import run_rule


def main(smk, log):
    import pandas as pd
    from sccohort import cohort
    from sccohort.runtime import write_h5ad, write_table

    params = smk.params
    paths = dict(zip(params.samples, smk.input.h5ads, strict=True))
    adata = cohort.prepare_cohort(paths, params.sheet, params.cohort, params.qc, seed=params.seed)
    merge = adata.uns["cohort"]["merge"]
    summary = pd.DataFrame(
        {
            "sample": merge["samples"],
            "n_cells": merge["n_cells"],
            "n_genes_in_sample": merge["n_genes_per_sample"],
        }
    )
    summary["n_genes_in_cohort"] = merge["n_genes"]
    summary["dropped_by_qc"] = False
    dropped = list(merge.get("dropped_samples", []))
    if dropped:
        summary = pd.concat(
            [summary, pd.DataFrame({"sample": dropped, "n_cells": 0, "dropped_by_qc": True})],
            ignore_index=True,
        )
        summary = summary.astype({"n_genes_in_sample": "Int64", "n_genes_in_cohort": "Int64"})
    write_h5ad(adata, smk.output.h5ad)
    write_table(summary, smk.output.summary)
    log.info("Wrote %s (%d cells x %d genes).", smk.output.h5ad, adata.n_obs, adata.n_vars)


run_rule(main, snakemake)  # noqa: F821
