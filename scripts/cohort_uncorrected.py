"""Rule cohort_uncorrected: kNN graph and UMAP of the uncorrected PCs (the diagnostics' "before")."""

from sccohort.runtime import run_rule


def main(smk, log):
    import anndata as ad
    import pandas as pd
    from sccohort import cohort
    from sccohort.runtime import write_h5ad

    # Runs beside cohort_cluster (both single-threaded), from the PCs alone.
    adata = cohort.read_cohort(smk.input.h5ad, parts=("obs", "obsm"))
    adata = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names), obsm={"X_pca": adata.obsm["X_pca"]})
    cohort.embed_uncorrected(adata, smk.params.cohort, seed=smk.params.seed)
    del adata.obsm["X_pca"]  # already in pca.h5ad
    write_h5ad(adata, smk.output.h5ad)
    log.info("Wrote the uncorrected kNN graph and UMAP of %d cells to %s.", adata.n_obs, smk.output.h5ad)


run_rule(main, snakemake)  # noqa: F821
