#!/usr/bin/env python
"""Compare two finished runs of the workflow: every result table and the final object's obs/obsm.

Used to show that a refactoring changed no result (issue 14: the bundled example before and after
the package split):

    python tools/compare_runs.py BEFORE_PROJECT AFTER_PROJECT

Tables (tsv/csv, gzipped or not, under results/) must have the same names, columns and values
(floats to 1e-9 relative); integrated.h5ad's obs and obsm must be equal (obsm to 1e-6 relative, as
float32 embeddings written by different code paths may round differently in the last bit).
Exits 1 and lists what differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from compare_results import _read_table, result_tables  # noqa: E402


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    tables_before, tables_after = result_tables(before / "results"), result_tables(after / "results")
    if tables_before != tables_after:
        problems.append(
            f"table sets differ: only before {sorted(set(tables_before) - set(tables_after))}, "
            f"only after {sorted(set(tables_after) - set(tables_before))}"
        )
    for rel in sorted(set(tables_before) & set(tables_after)):
        try:
            pd.testing.assert_frame_equal(
                _read_table(before / "results" / rel, before),
                _read_table(after / "results" / rel, after),
                check_exact=False, rtol=1e-9, atol=1e-12, obj=str(rel),
            )  # fmt: skip
        except AssertionError as error:
            problems.append(str(error).splitlines()[0] + " " + " ".join(str(error).splitlines()[1:4]))
    import anndata as ad

    path = Path("results/cohort/integrated.h5ad")
    a = ad.read_h5ad(before / path, backed="r")
    b = ad.read_h5ad(after / path, backed="r")
    try:
        pd.testing.assert_frame_equal(a.obs, b.obs, obj="integrated.h5ad obs")
    except AssertionError as error:
        problems.append(str(error).splitlines()[0])
    if sorted(a.obsm) != sorted(b.obsm):
        problems.append(f"obsm keys differ: {sorted(a.obsm)} vs {sorted(b.obsm)}")
    for key in sorted(set(a.obsm) & set(b.obsm)):
        if not np.allclose(np.asarray(a.obsm[key]), np.asarray(b.obsm[key]), rtol=1e-6, atol=1e-7):
            problems.append(f"obsm[{key!r}] differs")
    return problems


def main() -> int:
    before, after = (Path(p) for p in sys.argv[1:3])
    problems = compare(before, after)
    n_tables = len(result_tables(before / "results"))
    if problems:
        print("\n".join(problems))
        return 1
    print(f"identical: {n_tables} result tables and integrated.h5ad obs/obsm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
