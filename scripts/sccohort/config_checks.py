"""Checks of the config against the sample sheet, run when the DAG is built.

The JSON schemas check each value's type and range; what they cannot express is checked here:
values that must parse (a regular expression), values that contradict each other or the sample
sheet (a resolution that is not clustered, a DE group column the cohort will not have, a design
variable left blank for some sample), and paths that would send the outputs somewhere harmful.
Every message names the option or the sheet's sample and column, the value, and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from .errors import InputError
from .names import leiden_key

# How R, Excel and pandas write a missing value. In a design variable such a value would become a
# level of its own (the samples without a donor would be one "donor"), so it is refused there.
# "None" and "null" are not in the list: they are plausible level names (a treatment "None").
MISSING_SPELLINGS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "#N/A", "<NA>"})
# The obs column of each annotation method's cluster labels (sccohort.annotate.stage.LABEL_COLUMNS;
# tests/workflow/test_config_checks.py keeps the two equal).
ANNOTATION_LABEL_COLUMNS = {
    "markers": "cell_type",
    "celltypist": "cell_type_celltypist",
    "reference": "cell_type_reference",
    "consensus": "cell_type_consensus",
}
# Written by the marker method for every cell: the lineage above its cell type.
LINEAGE_COLUMN = "cell_type_lineage"


# What the workflow writes directly under `results` (its stages' folders and the report).
RESULTS_WRITTEN = ("qc", "cohort", "annotation", "de", "multiqc", "report.html")


def check_config(config: dict, samples: pd.DataFrame) -> None:
    """Raise InputError for config values that cannot work or contradict each other or the sheet.

    Also writes config["results"] in normal form (results_folder): "results/" or "./results" would
    put a double slash into every output path, so that `snakemake results/qc/...` matched no rule.
    """
    config["results"] = results_folder(config.get("results", "results"))
    check_results_folder(config["results"], samples)
    check_qc_options(config.get("qc") or {})
    check_cohort_options(config.get("cohort") or {}, samples)
    de = config.get("de") or {}
    if de.get("contrasts"):  # the DE stage runs
        check_design_values(de, samples, sheet_path=config.get("samples", "the sample sheet"))
        check_de_group_by(config, samples)


def results_folder(results) -> str:
    """`results` without trailing slashes, "./" or doubled slashes (a blank value stays as it is, to
    be refused by check_results_folder)."""
    import posixpath

    text = str(results)
    return posixpath.normpath(text) if text.strip() else text


# Placeholders of the shipped SLURM profile (profiles/slurm/config.yaml) a user must replace.
PROFILE_PLACEHOLDERS = ("YOUR_PARTITION", "YOUR_ACCOUNT")


def check_resource_placeholders(default_resources: Iterable[str]) -> None:
    """InputError when a default resource ("name=value", as Snakemake parsed the profile's
    default-resources) still holds a placeholder of the shipped SLURM profile: every job would be
    submitted to a partition or account that does not exist, and sbatch would refuse each one."""
    for item in default_resources or ():
        name, _, value = str(item).partition("=")
        placeholder = next((p for p in PROFILE_PLACEHOLDERS if p in value), None)
        if placeholder:
            raise InputError(
                f"default-resources {name}={value} still holds the SLURM profile's placeholder {placeholder}: "
                "in profiles/slurm/config.yaml (or your copy of it) replace YOUR_PARTITION with a partition "
                "of your cluster (sinfo lists them) and YOUR_ACCOUNT with your account (sacctmgr show assoc "
                "user=$USER), or delete the slurm_account line where the cluster has no accounts."
            )


def check_results_folder(results: str, samples: pd.DataFrame | None = None) -> None:
    """`results` must name a folder below which every output can go: not empty, not /, no braces,
    not inside a sample's input, and no input inside a folder of results the workflow writes."""
    text = str(results)
    if not text.strip():
        raise InputError(
            "config: results is empty, so every output would be written to the file system's root "
            "(results/qc/... becomes /qc/...); set it to a folder, e.g. results: results."
        )
    if Path(text).expanduser().resolve() == Path("/"):
        raise InputError(
            f"config: results {text!r} is the file system's root; set it to a folder of its own."
        )
    if "{" in text or "}" in text:
        raise InputError(
            f"config: results {text!r} contains '{{' or '}}', which Snakemake reads as a wildcard in every "
            "output path; choose a folder name without braces."
        )
    folder = Path(text).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise InputError(
            f"config: results {text!r} is an existing file, not a folder; set results to a folder for the "
            "outputs (it is created when missing), e.g. results: results."
        )
    for sample, row in samples.iterrows() if samples is not None else ():
        source = Path(str(row["path"])).expanduser().resolve()
        inside = source == folder or source in folder.parents
        written = folder in source.parents and source.relative_to(folder).parts[0] in RESULTS_WRITTEN
        if inside or written:
            raise InputError(
                f"config: results {text!r} and the input of sample {sample!r} ({row['path']}) overlap: outputs "
                "would be written among the inputs (or the inputs among the outputs). Keep results in a "
                "folder of its own."
            )


def check_qc_options(qc: Mapping) -> None:
    """qc.hb_pattern must compile; qc.mt_prefix and qc.ribo_prefixes must not be empty strings."""
    pattern = qc.get("hb_pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as error:
            raise InputError(
                f"config: qc.hb_pattern {pattern!r} is not a valid regular expression ({error}); fix it "
                "(the default is '^HB[ABDEGMQZ][0-9]?$', which matches the haemoglobin genes HBA1, HBB, ...)."
            ) from None
    if "mt_prefix" in qc and not str(qc["mt_prefix"]).strip():
        raise InputError(
            "config: qc.mt_prefix is empty; an empty prefix matches every gene, so % mitochondrial would be "
            "meaningless. Use auto (MT- for human, mt- for mouse) or the prefix of your reference's "
            "mitochondrial genes."
        )
    for i, prefix in enumerate(qc.get("ribo_prefixes") or []):
        if not str(prefix).strip():
            raise InputError(
                f"config: qc.ribo_prefixes[{i}] is empty; an empty prefix matches every gene. Remove it "
                "(the default is [RPS, RPL])."
            )


def check_cohort_options(cohort: Mapping, samples: pd.DataFrame) -> None:
    """The default resolution is clustered; batch columns exist and are filled in for every sample."""
    resolutions = [float(r) for r in cohort.get("leiden_resolutions", [])]
    keys = [leiden_key(r) for r in resolutions]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise InputError(
            f"config: cohort.leiden_resolutions {cohort['leiden_resolutions']} lists the same resolution more "
            f"than once ({', '.join(repeated)}); list each once."
        )
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
            _refuse_missing_values(
                samples,
                key,
                why=f"{key!r} is a batch column ({option}): the samples without a value would be "
                "corrected as one batch",
                fix=f"fill it in for every sample, or use another column in {option}",
            )


def check_design_values(de: Mapping, samples: pd.DataFrame, *, sheet_path: str) -> None:
    """Every variable of de.design has a value (not blank, not NA) for every sample."""
    from .de import design_variables

    design = de.get("design", "~ condition")
    for variable in design_variables(design):
        if variable in samples.columns:  # an unknown column is de's own check (check_de_config)
            _refuse_missing_values(
                samples,
                variable,
                why=f"{variable!r} is a variable of de.design {design!r}, which needs a level for every "
                "sample (a blank or NA would become a level of its own)",
                fix=f"fill it in, or take {variable!r} out of de.design",
                where=f"Sample sheet {sheet_path}",
            )


def _refuse_missing_values(
    samples: pd.DataFrame, column: str, *, why: str, fix: str, where: str = "Sample sheet"
) -> None:
    if column == "sample":  # never blank, and an id, not a value: a sample may be called NA
        return
    values = samples[column].astype(str).str.strip()
    missing = values[values.isin(MISSING_SPELLINGS)]
    if missing.empty:
        return
    sample, value = missing.index[0], missing.iloc[0]
    others = f" (and {len(missing) - 1} more sample(s))" if len(missing) > 1 else ""
    shown = "empty" if value == "" else f"{value!r}, a missing value"
    hint = "" if value == "" else f" If {value!r} is a real level, give it another name."
    raise InputError(
        f"{where}, sample {sample!r}{others}, column {column!r}: {shown}; {why}. {fix[0].upper()}{fix[1:]}.{hint}"
    )


def de_group_columns(config: Mapping, samples: pd.DataFrame) -> list[str]:
    """The obs columns of the annotated cohort that de.group_by may name: the annotation's label
    columns (cell_type, cell_type_lineage, one per optional method configured and, with more than
    one method, cell_type_consensus), leiden_<res> of every clustered resolution, and the sheet's
    covariate columns that are not design variables or the sample id."""
    from .de import design_variables
    from .sheet import covariate_columns

    annotation = config.get("annotation") or {}
    methods = ["markers"] + [
        method for method, option in (("celltypist", "celltypist_model"), ("reference", "reference"))
        if annotation.get(option)
    ]  # fmt: skip
    leiden = [leiden_key(r) for r in (config.get("cohort") or {}).get("leiden_resolutions", [])]
    design = set(design_variables((config.get("de") or {}).get("design", "~ condition")))
    sheet = [c for c in covariate_columns(samples) if c != "sample" and c not in design]
    if len(methods) > 1:
        methods.append("consensus")
    labels = [ANNOTATION_LABEL_COLUMNS[m] for m in methods] + [LINEAGE_COLUMN]
    return _unique(labels + leiden + sheet)


def check_de_group_by(config: Mapping, samples: pd.DataFrame) -> None:
    """de.group_by names an obs column the annotated cohort will have (see de_group_columns)."""
    de = config.get("de") or {}
    group_by = str(de.get("group_by", "cell_type"))
    allowed = de_group_columns(config, samples)
    if group_by in allowed:
        return
    from .de import design_variables

    if group_by == "sample" or group_by in design_variables(de.get("design", "~ condition")):
        raise InputError(
            f"config: de.group_by {group_by!r} is the sample id or a variable of de.design: each group "
            "would hold a single sample or level, so no contrast could be tested within it. Group by cell "
            "type (cell_type) or by clusters (a leiden_<resolution> column)."
        )
    raise InputError(
        f"config: de.group_by {group_by!r} is not a column the annotated cohort will have; use one of "
        f"{', '.join(allowed)} (leiden_<resolution> for the resolutions in cohort.leiden_resolutions; "
        "sample-sheet columns as they are written)."
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def check_inputs(samples: pd.DataFrame, config: dict, found: dict | None = None) -> set[str]:
    """Inspect every sample's input (sccohort.qc.inspect_input) and the gene sets together.

    Raises InputError naming the sample for a bad input, or the samples whose genes do not
    overlap (cohort.min_gene_overlap), or a qc.mt_prefix that no gene of any sample starts with;
    returns the union of gene symbols (for the marker check).
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
    qc = config.get("qc") or {}
    check_mt_prefix_matches(qc.get("mt_prefix", "auto"), symbols)
    check_enough_cells(
        {sample: summary.n_cells for sample, summary in summaries.items()},
        min_cells=int(qc.get("min_cells_after_qc", 20)),
        policy=str(qc.get("failed_sample_policy", "fail")),
    )
    return symbols


def check_enough_cells(n_cells: Mapping[str, int], *, min_cells: int, policy: str) -> None:
    """InputError naming the samples whose input holds fewer barcodes than qc.min_cells_after_qc:
    no threshold can let them pass, so under failed_sample_policy fail the run would stop at their
    QC; under drop they are left out of the cohort at run time, as planned."""
    short = {sample: n for sample, n in n_cells.items() if n < min_cells}
    if not short or policy != "fail":
        return
    listed = ", ".join(f"{sample!r} ({n} cells)" for sample, n in short.items())
    raise InputError(
        f"Input of sample(s) {listed} holds fewer cells than qc.min_cells_after_qc ({min_cells}), so it cannot "
        "pass QC whatever the thresholds. Check that the sample sheet points at the filtered matrix of that "
        "sample; otherwise remove the sample, lower qc.min_cells_after_qc, or set qc.failed_sample_policy: "
        "drop to leave it out of the cohort."
    )


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


def check_mt_prefix_matches(mt_prefix: str, symbols: Iterable[str]) -> None:
    """A qc.mt_prefix other than auto must start at least one gene symbol of the inputs (a typo
    such as MT_ would otherwise switch the % mito metric and filter off for every sample)."""
    if mt_prefix in (None, "auto"):
        return
    symbols = list(symbols)
    if any(str(s).startswith(str(mt_prefix)) for s in symbols):
        return
    mt_like = sorted(s for s in symbols if str(s).lower().startswith("mt"))[:5]
    raise InputError(
        f"config: qc.mt_prefix {mt_prefix!r} starts no gene symbol of any sample, so % mitochondrial "
        f"could not be computed anywhere (genes starting with mt/MT: {', '.join(mt_like) or 'none'}). "
        "Fix the prefix, or use auto, which skips the metric for samples without mitochondrial genes."
    )
