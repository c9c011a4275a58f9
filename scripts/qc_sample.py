"""Rule qc_sample: per-barcode QC metrics and adaptive + fixed thresholds for one sample."""

from sccohort.runtime import run_rule


def main(smk, log):
    import anndata as ad
    from sccohort import qc, runtime
    from sccohort.sheet import sample_override

    adata = ad.read_h5ad(smk.input.h5ad)
    overrides = {
        column: sample_override(smk.params.sample_row, column) for column in smk.params.override_columns
    }
    adata, thresholds = qc.run_qc(adata, smk.params.qc, overrides)
    adata.uns["qc_thresholds"] = thresholds
    log.info("%d of %d barcodes pass the QC thresholds", int(adata.obs["qc_pass"].sum()), adata.n_obs)
    for note in adata.uns["qc_metric_notes"].values():
        if note and " " in str(note):
            log.warning("%s", note)
    runtime.write_h5ad(adata, smk.output.h5ad)


run_rule(main, snakemake)  # noqa: F821
