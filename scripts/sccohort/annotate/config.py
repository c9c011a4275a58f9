"""The annotation block of the config, checked when the DAG is built (workflow/rules/annotation.smk).

Paths in the block are relative to the working directory; one that does not exist there but
exists relative to the workflow's root (e.g. the shipped marker tables when the workflow runs
with -d elsewhere) is taken from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError
from ..names import leiden_key
from .marker_table import match_markers, read_marker_table


def resolve_input_path(value: str | None, basedir: str | Path, option: str) -> str | None:
    """A configured input path: as given (relative to the working directory) when it exists there,
    else relative to the workflow's root (`basedir`) when it exists there, else InputError."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise InputError(f"config: {option} {value} does not exist.")
        return str(path)
    shipped = Path(basedir) / path
    if shipped.exists():
        return str(shipped)
    raise InputError(
        f"config: {option} {value} exists neither in the working directory ({Path.cwd()}) nor in the "
        f"workflow directory ({basedir}); fix the path."
    )


def annotation_resolution(config: Mapping) -> float:
    """annotation.resolution, or cohort.default_resolution when it is null."""
    value = config.get("annotation", {}).get("resolution")
    if value is None:
        value = config.get("cohort", {}).get("default_resolution")
    if value is None:
        raise InputError("config: neither annotation.resolution nor cohort.default_resolution is set.")
    return float(value)


def check_annotation_config(
    config: Mapping, basedir: str | Path, gene_symbols: Sequence[str] | None = None
) -> dict:
    """Resolve and check the annotation block; return the resolved settings for the rules.

    Fails early (InputError) on a resolution that is not clustered, a missing or malformed marker
    table, a marker table matching none of `gene_symbols` (the inputs' genes, when given), or a
    missing CellTypist model / reference file. Returns resolution, cluster_key, markers,
    celltypist_model, reference (resolved paths or None) and methods.
    """
    options = config.get("annotation", {})
    resolution = annotation_resolution(config)
    clustered = [float(r) for r in config.get("cohort", {}).get("leiden_resolutions", [])]
    if clustered and resolution not in clustered:
        raise InputError(
            f"config: annotation.resolution {resolution} is not one of cohort.leiden_resolutions {clustered}; "
            "add it there or pick one of them."
        )
    markers = resolve_input_path(options.get("markers"), basedir, "annotation.markers")
    if markers is None:
        raise InputError("config: annotation.markers must name a marker table.")
    table = read_marker_table(markers)
    if gene_symbols is not None:
        match_markers(table, gene_symbols, markers)
    model = resolve_input_path(options.get("celltypist_model"), basedir, "annotation.celltypist_model")
    reference = resolve_input_path(options.get("reference"), basedir, "annotation.reference")
    methods = ["markers"] + (["celltypist"] if model else []) + (["reference"] if reference else [])
    return {
        "resolution": resolution,
        "cluster_key": leiden_key(resolution),
        "markers": markers,
        "celltypist_model": model,
        "reference": reference,
        "methods": methods,
    }
