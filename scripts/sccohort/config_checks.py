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


def check_inputs(samples: pd.DataFrame, config: dict, found: dict | None = None) -> set[str]:
    """Inspect every sample's input (sccohort.qc.inspect_input) and the gene sets together.

    Raises InputError naming the sample for a bad input, or the samples whose genes do not
    overlap (cohort.min_gene_overlap); returns the union of gene symbols (for the marker check).
    `found`, when given, receives what was seen: "inputs" ({sample: InputSummary}) and
    "n_common_genes" (genes shared by all samples), for dag_summary.
    """
    from . import cohort
    from . import qc as sample_io

    gene_ids, symbols, summaries = {}, set(), {}
    for sample, row in samples.iterrows():
        try:
            summary = sample_io.inspect_input(
                row["path"], row.get("counts_layer") or None, row.get("genome") or None
            )
        except InputError as error:
            raise InputError(f"Sample {sample!r}: {error}") from None
        gene_ids[sample] = summary.gene_ids
        summaries[sample] = summary
        symbols.update(summary.gene_symbols)
    options = {**cohort.DEFAULTS, **(config.get("cohort") or {})}
    sample_codes, n_union = cohort.gene_codes(gene_ids)
    n_samples_with = cohort.check_gene_overlap(sample_codes, n_union, float(options["min_gene_overlap"]))
    if found is not None:
        found["inputs"] = summaries
        found["n_common_genes"] = int((n_samples_with == len(sample_codes)).sum())
    return symbols


def dag_summary(
    samples: pd.DataFrame,
    config: dict,
    *,
    found: dict,
    contrasts: list[dict],
    annotation: dict,
    config_files: list[str],
) -> str:
    """A few lines saying what the DAG-time checks looked at (printed by every `snakemake -n`).

    `found` is what check_inputs filled in, `contrasts` check_de_config's result, `annotation`
    check_annotation_config's.
    """
    sheet = config.get("samples", "the sample sheet")
    lines = ["sccohort checked, before any job:"]
    lines.append(f"  config   {', '.join(config_files) or 'the config'}: every option against the schema")
    levels = samples["condition"].value_counts()
    conditions = ", ".join(f"{level} {n}" for level, n in levels.items())
    lines.append(
        f"  samples  {len(samples)} in {sheet}: conditions {conditions}; {samples['donor'].nunique()} donors, "
        f"{samples['batch'].nunique()} batches"
    )
    inputs = found.get("inputs") or {}
    if inputs:
        formats = pd.Series([s.format for s in inputs.values()]).value_counts()
        cells = [s.n_cells for s in inputs.values()]
        lines.append(
            f"  inputs   {len(inputs)} probed ({', '.join(f'{n} {f}' for f, n in formats.items())}): layout, "
            f"first 10,000 counts integer; {min(cells):,}-{max(cells):,} barcodes each; "
            f"{found.get('n_common_genes', 0):,} genes shared by all samples"
        )
    else:
        lines.append("  inputs   structure probed (cluster job: gene lists not compared)")
    if annotation:
        lines.append(f"  markers  {annotation.get('markers')}: marker genes found among the inputs' genes")
    if contrasts:
        design = (config.get("de") or {}).get("design", "")
        for contrast in contrasts:
            counts = samples[contrast["factor"]].value_counts()
            test, reference = contrast["test"], contrast["reference"]
            lines.append(
                f"  DE       {contrast['name']}: {contrast['factor']} {test} ({counts.get(test, 0)} samples) "
                f"vs {reference} ({counts.get(reference, 0)}), design {design}"
            )
    else:
        lines.append("  DE       no contrast (de.contrasts is empty): the DE stage is off")
    return "\n".join(lines)
