"""Rule de_pseudobulk: sum raw counts per sample x group of the integrated, annotated cohort."""

from sccohort.runtime import configure_environment, get_logger

configure_environment(snakemake.threads)
log = get_logger(snakemake.log[0])

try:
    from sccohort import pseudobulk as pb

    params = snakemake.params
    source = str(snakemake.input.h5ad)
    adata = pb.read_counts_h5ad(source, layer=params.layer)
    covariates = [c for c in params.covariates if c in adata.obs.columns]
    ignored = [c for c in params.covariates if c not in adata.obs.columns and c not in params.required]
    if ignored:
        log.warning(
            "sheet column(s) %s not in obs of %s; left out of the metadata", ", ".join(ignored), source
        )
    covariates += [c for c in params.required if c not in covariates]
    log.info("%s: %d cells x %d genes; grouping by %r", source, adata.n_obs, adata.n_vars, params.group_by)
    counts, metadata = pb.pseudobulk(
        adata, group_by=params.group_by, layer=None, covariates=covariates, source=source
    )
    log.info(
        "%d pseudobulk samples (%d groups x %d samples); %d with fewer than %d cells",
        len(metadata),
        metadata["group"].nunique(),
        metadata["sample"].nunique(),
        int((metadata["n_cells"] < params.min_cells).sum()),
        params.min_cells,
    )
    pb.write_pseudobulk(counts, metadata, snakemake.output.counts, snakemake.output.metadata)
except Exception:
    log.exception("de_pseudobulk failed")
    raise
