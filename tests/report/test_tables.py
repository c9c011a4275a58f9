"""The report's numbers (sccohort.report.tables): QC summary, cells per step, DE ordering, checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sccohort.report import data as report_data
from sccohort.report import tables


def test_sample_summary_numbers_come_from_the_cells(synthetic):
    _, inputs, _, _, _ = synthetic
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        info = json.loads(Path(inputs.thresholds[sample]).read_text())
        row = tables.sample_qc_summary(info, report_data.read_cells(path))
        kept = cells[cells["pass"]]
        assert row["cells_in"] == len(cells)
        assert row["cells_after_qc"] == int(cells["qc_pass"].sum())
        assert row["cells_kept"] == len(kept)
        assert row["median_genes"] == pytest.approx(kept["n_genes_by_counts"].median())
        assert row["median_pct_mt"] == pytest.approx(kept["pct_counts_mt"].median())
        assert row["removed_low_counts"] == int((cells["total_counts"] < 1000).sum())
        if sample == "S3":  # doublet calling skipped: no rate, a note
            assert np.isnan(row["doublet_rate_pct"]) and row["doublets_skipped"]
        else:
            expected = 100 * cells["predicted_doublet"].sum() / cells["qc_pass"].sum()
            assert row["doublet_rate_pct"] == pytest.approx(expected)
            assert row["doublets"] > 0


def test_cells_per_step_adds_up(synthetic):
    _, inputs, _, sheet, _ = synthetic
    data = report_data.load(inputs)
    final = tables.final_cells_per_sample(data.composition, data.umap)
    steps = tables.cells_per_step(data.qc, final, sheet)
    body, total = steps.iloc[:-1], steps.iloc[-1]
    assert total["sample"] == "total"
    for column in ("cells in", "after QC thresholds", "after doublet removal", "in final object"):
        assert total[column] == body[column].sum()
    # every kept cell is in the (synthetic) final object; QC only removes
    assert (body["in final object"] == body["after doublet removal"]).all()
    assert (body["after QC thresholds"] <= body["cells in"]).all()
    assert total["in final object"] == len(data.umap)


def test_top_de_genes_orders_by_adjusted_pvalue_missing_last():
    table = pd.DataFrame(
        {
            "gene": list("abcdef"),
            "log2FoldChange": [1, -3, 2, 0.5, 4, 1],
            "pvalue": [0.01, 0.001, 0.001, np.nan, 0.2, 0.0001],
            "padj": [0.02, 0.004, 0.004, np.nan, 0.3, 0.001],
        }
    )
    top = tables.top_de_genes(table, 4)
    # f (smallest padj), then b/c tied on padj and pvalue: larger |log2FC| first, then a
    assert list(top["gene"]) == ["f", "b", "c", "a"]
    assert list(tables.top_de_genes(table, 10)["gene"])[-1] == "d"


def test_checksums_of_files_and_mtx_directories(tmp_path):
    single = tmp_path / "a.h5"
    single.write_bytes(b"abc" * 1000)
    folder = tmp_path / "mtx"
    folder.mkdir()
    for name in ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz"):
        (folder / name).write_bytes(name.encode() * 7)
    table = tables.checksums({"one": single, "dir": folder, "gone": tmp_path / "missing.h5"}, chunk=100)
    assert table.loc[table["input"] == "one", "sha256"].item() == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert table.loc[table["input"] == "one", "md5"].item() == hashlib.md5(b"abc" * 1000).hexdigest()
    inside = table[table["input"] == "dir"]
    assert sorted(Path(f).name for f in inside["file"]) == [
        "barcodes.tsv.gz",
        "features.tsv.gz",
        "matrix.mtx.gz",
    ]
    for _, row in inside.iterrows():
        assert row["md5"] == hashlib.md5(Path(row["file"]).read_bytes()).hexdigest()
    assert table.loc[table["input"] == "gone", "md5"].item() == "not found"
