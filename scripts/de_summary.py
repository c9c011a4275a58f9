"""Rule de_summary: one table of every group x contrast, tested or skipped (with the reason)."""

from sccohort.runtime import configure_environment, get_logger

configure_environment(snakemake.threads)
log = get_logger(snakemake.log[0])

try:
    from pathlib import Path

    import pandas as pd
    from sccohort.runtime import write_table

    tables = [
        pd.read_csv(Path(folder) / "summary.tsv", sep="\t", dtype=str, keep_default_na=False)
        for folder in snakemake.input
    ]
    summary = pd.concat(tables, ignore_index=True)
    for status, n in summary["status"].value_counts().items():
        log.info("%s: %d group x contrast pairs", status, n)
    write_table(summary, snakemake.output[0])
except Exception:
    log.exception("de_summary failed")
    raise
