import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The workflow's logic lives in scripts/sccohort; the DAG-time checks import it from there.
# Resolved from this file's own location (workflow/rules/), not workflow.basedir, which is the
# outer project's folder when sccohort is used as a Snakemake module.
SCCOHORT_ROOT = Path(str(workflow.current_basedir)).resolve().parents[1]
sys.path.insert(0, str(SCCOHORT_ROOT / "scripts"))

from sccohort.errors import InputError  # noqa: E402
from sccohort import sheet as sample_sheet  # noqa: E402
from sccohort import config_checks  # noqa: E402
from sccohort import qc as sample_io  # noqa: E402
from sccohort import config_schema  # noqa: E402

# The schema first through config_schema (a few lines per problem: key path, value, closest valid
# key), then Snakemake's validate, which fills in the defaults of a config known to be valid.
try:
    config_schema.check_config_schema(
        config,
        config_schema.load_schema(
            SCCOHORT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
        ),
        config_files=[str(f) for f in workflow.configfiles],
    )
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None
validate(config, schema="../schemas/config.schema.yaml", set_default=True)

# What check_inputs saw (inputs, shared genes), for the summary of print_dag_summary.
INPUT_CHECKS = {}
try:
    samples = sample_sheet.check_sample_sheet(
        sample_sheet.read_sample_sheet(config["samples"]), config["samples"]
    )
    validate(samples, schema="../schemas/samples.schema.yaml", set_default=False)
    config_checks.check_config(config, samples)
    config_checks.check_resource_placeholders(
        getattr(workflow.resource_settings.default_resources, "args", None) or ()
    )
    # Every input's layout, shape, first counts and gene list, read from headers when the DAG is
    # built (snakemake -n catches them). Jobs on cluster nodes re-read the Snakefile; they only
    # repeat the cheap structural probe.
    if workflow.remote_exec:
        for _sample, _row in samples.iterrows():
            try:
                sample_io.probe_input(
                    _row["path"],
                    _row.get("counts_layer") or None,
                    _row.get("genome") or None,
                )
            except InputError as error:
                raise InputError(f"Sample {_sample!r}: {error}") from None
        INPUT_GENE_SYMBOLS = None
    else:
        INPUT_GENE_SYMBOLS = config_checks.check_inputs(samples, config, INPUT_CHECKS)
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None

SAMPLES = list(samples.index)
RESULTS = config["results"]
SEED = config["seed"]


wildcard_constraints:
    # escaped: an id may hold '.', which a regular expression reads as any character
    sample="|".join(re.escape(s) for s in SAMPLES),


def dag_check(check, *args):
    """check(*args) for an input function: a DAG-time check of one rule, run only when that rule's
    job is in the DAG (an InputError stops the DAG build like the checks above)."""
    try:
        return check(*args)
    except InputError as error:
        raise WorkflowError(f"sccohort: {error}") from None


def print_dag_summary():
    """Log what the DAG-time checks looked at (the Snakefile calls it once every rules file is read):
    `snakemake -n` then says what it checked. Cluster jobs, which re-read the Snakefile, stay quiet.
    """
    if workflow.remote_exec:
        return
    from snakemake.logging import logger

    logger.info(
        config_checks.dag_summary(
            samples,
            config,
            found=INPUT_CHECKS,
            contrasts=DE_CONTRASTS,
            annotation=ANNOTATION_SETTINGS,
            config_files=[str(f) for f in workflow.configfiles],
        )
    )


def sample_input(wildcards):
    return samples.loc[wildcards.sample, "path"]


def sample_row(wildcards):
    """The sheet row of one sample as a plain dict (passed to the rule scripts as params)."""
    return samples.loc[wildcards.sample].to_dict()


def input_size_mb(paths):
    """Total size on disk of the given files or directories, in MB."""
    total = 0
    for path in [paths] if isinstance(paths, str) else paths:
        path = Path(path)
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        elif path.exists():
            total += path.stat().st_size
    return total / 1e6


def mem_mb_from_input(base_mb, per_input_mb):
    """A resources callable: memory grows with the input's size and doubles with each retry,
    so `--retries` recovers from an out-of-memory kill."""

    def mem_mb(wildcards, input, attempt):
        return int((base_mb + per_input_mb * input_size_mb(input)) * 2 ** (attempt - 1))

    return mem_mb


def runtime_from_input(base_min, per_input_mb):
    def runtime(wildcards, input, attempt):
        return int((base_min + per_input_mb * input_size_mb(input)) * attempt)

    return runtime


def qc_passed_samples():
    """Samples entering the cohort stage. Every sample gets a filtered.h5ad; one that fails QC under
    qc.failed_sample_policy: drop is marked in its uns["qc_status"]["dropped"] and skipped by the merge,
    so no checkpoint is needed."""
    return SAMPLES


def qc_outputs():
    return expand(
        f"{RESULTS}/qc/{{sample}}/{{name}}",
        sample=SAMPLES,
        name=["cells.tsv.gz", "filtered.h5ad", "thresholds.json", "report.html"],
    ) + [f"{RESULTS}/qc/summary.html", f"{RESULTS}/qc/summary.tsv"]


def all_outputs():
    # Each stage's rules file defines its <stage>_outputs(); rule all asks for all of them.
    return (
        qc_outputs()
        + cohort_outputs()
        + annotation_outputs()
        + de_outputs()
        + report_outputs()
        + export_outputs()
    )
