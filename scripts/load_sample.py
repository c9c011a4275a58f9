"""Rule load_sample: read one sample's matrix (any supported layout), check it, attach sheet columns."""

from sccohort.runtime import run_rule


def main(smk, log):
    from sccohort import io, runtime

    row = smk.params.sample_row
    adata = io.read_sample(smk.input.matrix, counts_layer=row.get("counts_layer"), genome=row.get("genome"))
    for column in smk.params.covariates:
        adata.obs[column] = str(row[column])
    log.info(
        "sample %s: %d barcodes x %d genes from %s",
        row["sample"],
        adata.n_obs,
        adata.n_vars,
        smk.input.matrix,
    )
    runtime.write_h5ad(adata, smk.output.h5ad)


run_rule(main, snakemake)  # noqa: F821
