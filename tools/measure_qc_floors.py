#!/usr/bin/env python
"""Share of cells kept per sample under candidate fixed QC floors (docs/qc_defaults.md).

Every other QC option is the shipped config's (adaptive MAD limits, % mito); each input is read
with the workflow's own reader and judged with its own run_qc.

    python tools/measure_qc_floors.py INPUT [INPUT ...] > floors.tsv
    python tools/measure_qc_floors.py --floors 500/200,200/100 ../shared/data/pbmc_hashing_8samples_GSE108313/hto*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def parse_floor(text: str) -> tuple[int | None, int | None]:
    counts, genes = text.split("/")
    return tuple(None if v == "none" else int(v) for v in (counts, genes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help=".h5, mtx directory or .h5ad per sample")
    parser.add_argument(
        "--floors",
        default="500/200,250/200,200/100,none/none",
        help="min_counts/min_genes pairs, comma-separated",
    )
    args = parser.parse_args(argv)
    from sccohort.qc.load import read_sample
    from sccohort.qc.metrics import run_qc

    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["qc"]
    rows = []
    for path in args.inputs:
        adata = read_sample(path)
        for floor in args.floors.split(","):
            min_counts, min_genes = parse_floor(floor)
            options = {**shipped, "min_counts": min_counts, "min_genes": min_genes}
            judged, thresholds = run_qc(adata.copy(), qc_options=options)
            reasons = judged.obs["fail_reason"]
            rows.append(
                {
                    "input": path,
                    "floors": floor,
                    "cells": judged.n_obs,
                    "median_counts": judged.obs["total_counts"].median(),
                    "median_genes": judged.obs["n_genes_by_counts"].median(),
                    "pct_kept": round(100 * judged.obs["qc_pass"].mean(), 1),
                    "pct_low_counts": round(100 * reasons.str.contains("low_counts").mean(), 1),
                    "pct_low_genes": round(100 * reasons.str.contains("low_genes").mean(), 1),
                    "lower_counts": round(thresholds["total_counts"]["lower"], 1),
                    "lower_genes": round(thresholds["n_genes_by_counts"]["lower"], 1),
                }
            )
    pd.DataFrame(rows).to_csv(sys.stdout, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
