"""Checks of the config against the sample sheet, run when the DAG is built."""

from __future__ import annotations

import pandas as pd

from .errors import InputError


def check_config(config: dict, samples: pd.DataFrame) -> None:
    """Raise InputError for config values that contradict each other or the sample sheet."""
    cohort = config.get("cohort", {})
    resolutions = [float(r) for r in cohort.get("leiden_resolutions", [])]
    default = cohort.get("default_resolution")
    if default is not None and resolutions and float(default) not in resolutions:
        raise InputError(
            f"config: cohort.default_resolution {default} is not one of cohort.leiden_resolutions "
            f"{resolutions}; add it to the list or pick one of them."
        )
    for option, keys in (
        ("cohort.batch_keys", cohort.get("batch_keys", [])),
        ("cohort.hvg_batch_key", [cohort["hvg_batch_key"]] if cohort.get("hvg_batch_key") else []),
    ):
        for key in keys:
            if key not in samples.columns:
                raise InputError(
                    f"config: {option} names column {key!r}, which the sample sheet does not have "
                    f"(it has {', '.join(samples.columns)})."
                )


def check_inputs(samples: pd.DataFrame, config: dict) -> set[str]:
    """Inspect every sample's input (sccohort.qc.inspect_input) and the gene sets together.

    Raises InputError naming the sample for a bad input, or the samples whose genes do not
    overlap (cohort.min_gene_overlap); returns the union of gene symbols (for the marker check).
    """
    from . import cohort
    from . import qc as sample_io

    gene_ids, symbols = {}, set()
    for sample, row in samples.iterrows():
        try:
            summary = sample_io.inspect_input(
                row["path"], row.get("counts_layer") or None, row.get("genome") or None
            )
        except InputError as error:
            raise InputError(f"Sample {sample!r}: {error}") from None
        gene_ids[sample] = summary.gene_ids
        symbols.update(summary.gene_symbols)
    options = {**cohort.DEFAULTS, **(config.get("cohort") or {})}
    sample_codes, n_union = cohort.gene_codes(gene_ids)
    cohort.check_gene_overlap(sample_codes, n_union, float(options["min_gene_overlap"]))
    return symbols
