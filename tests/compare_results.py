"""Comparing two runs' result tables and final cell labels (SLURM vs local, resumed vs straight,
--cores 1 vs 2, offline vs online)."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import pandas as pd

# columns that legitimately differ between two runs of the same inputs
_VOLATILE_COLUMN = re.compile(r"time|date|elapsed|duration|host|node|seconds|^s$|^pid$", re.I)


def result_tables(results: Path) -> list[Path]:
    return sorted(
        p.relative_to(results)
        for p in results.rglob("*")
        if p.is_file() and re.search(r"\.(tsv|csv)(\.gz)?$", p.name)
    )


def _read_table(path: Path, project: Path) -> pd.DataFrame:
    sep = "," if re.search(r"\.csv(\.gz)?$", path.name) else "\t"
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        lines = handle.read().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):  # comment headers (MultiQC custom content)
        lines.pop(0)
    table = pd.read_csv(io.StringIO("".join(lines)), sep=sep)
    table = table[[c for c in table.columns if not _VOLATILE_COLUMN.search(str(c))]]
    for column in table.select_dtypes(include="object").columns:
        table[column] = table[column].str.replace(str(project), "<project>", regex=False)
    return table


def assert_same_results(local: Path, remote: Path, *, targets_only: bool = False) -> list[Path]:
    """Every result table of `local` is in `remote` and equal; returns the tables compared.

    targets_only: `remote` ran some targets of the same project (the jobs they need), so it
    holds a subset of local's tables; the tables it has are compared, and it must have some.
    """
    tables = result_tables(local / "results")
    assert tables, "the local run wrote no result tables"
    remote_tables = result_tables(remote / "results")
    if targets_only:
        extra = sorted(map(str, set(remote_tables) - set(tables)))
        assert remote_tables and not extra, f"tables the reference does not have: {extra}"
        tables = remote_tables
    else:
        assert tables == remote_tables
    for rel in tables:
        pd.testing.assert_frame_equal(
            _read_table(local / "results" / rel, local),
            _read_table(remote / "results" / rel, remote),
            check_exact=False, rtol=1e-9, atol=1e-12, obj=str(rel),
        )  # fmt: skip
    return tables


# obs columns of the final object whose values must not depend on how the run was executed
LABEL_COLUMNS = re.compile(r"^(leiden_.*|cell_type.*|doublet_score|predicted_doublet)$")


def final_labels(project: Path) -> pd.DataFrame:
    """Cluster labels, cell types and doublet scores of results/cohort/integrated.h5ad."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(project / "results" / "cohort" / "integrated.h5ad", "r") as handle:
        obs = read_elem(handle["obs"])
    return obs[[c for c in obs.columns if LABEL_COLUMNS.match(str(c))]]


def assert_same_run(reference: Path, other: Path, *, targets_only: bool = False) -> list[Path]:
    """Every result table (of `other`'s targets: assert_same_results) and the final object's
    labels are equal; returns the tables compared."""
    tables = assert_same_results(reference, other, targets_only=targets_only)
    labels = final_labels(reference)
    assert any(c.startswith("leiden_") for c in labels) and "cell_type" in labels
    pd.testing.assert_frame_equal(labels, final_labels(other), obj="integrated.h5ad obs labels")
    return tables
