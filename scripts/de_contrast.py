"""Rule de_contrast: PyDESeq2 per group for one contrast; tables, figures and the contrast's summary."""

from sccohort.runtime import configure_environment, get_logger

configure_environment(snakemake.threads)
log = get_logger(snakemake.log[0])

try:
    from sccohort import de
    from sccohort.pseudobulk import read_pseudobulk

    params = snakemake.params
    settings = de.DESettings.from_config(params.de)
    contrast = params.contrast
    log.info(
        "contrast %s: %s %s vs %s; design %s",
        contrast["name"],
        contrast["factor"],
        contrast["test"],
        contrast["reference"],
        settings.design,
    )
    counts, metadata = read_pseudobulk(snakemake.input.counts, snakemake.input.metadata)
    results, summary = de.run_contrast(
        counts,
        metadata,
        contrast,
        settings,
        threads=snakemake.threads,
        log=log,
    )
    de.write_contrast(results, summary, contrast, settings, snakemake.output[0])
except Exception:
    log.exception("de_contrast failed")
    raise
