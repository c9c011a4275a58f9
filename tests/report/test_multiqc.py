"""MultiQC custom content of the QC numbers (sccohort.report.multiqc) and an offline MultiQC run."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from report.synthetic import mqc_table
from sccohort.report import data as report_data
from sccohort.report import multiqc


def _mqc_header(text: str) -> dict:
    header = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    return yaml.safe_load(header)


def test_multiqc_custom_content(synthetic, tmp_path):
    _, inputs, _, _, _ = synthetic
    data = report_data.load(inputs)
    files = multiqc.custom_content(data.qc)
    assert set(files) == {"sccohort_general_stats_mqc.tsv", "sccohort_qc_mqc.tsv", "sccohort_cells_mqc.tsv"}
    headers = {name: _mqc_header(text) for name, text in files.items()}
    assert headers["sccohort_general_stats_mqc.tsv"]["plot_type"] == "generalstats"
    assert headers["sccohort_qc_mqc.tsv"]["plot_type"] == "table"
    assert headers["sccohort_cells_mqc.tsv"]["plot_type"] == "bargraph"
    assert len({h["id"] for h in headers.values()}) == 3
    general = mqc_table(files["sccohort_general_stats_mqc.tsv"])
    assert list(general.columns) == [
        "cells_in",
        "cells_kept",
        "median_genes",
        "median_pct_mt",
        "doublet_rate_pct",
    ]
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        assert general.loc[sample, "cells_in"] == len(cells)
        assert general.loc[sample, "cells_kept"] == cells["pass"].sum()
        assert general.loc[sample, "median_genes"] == pytest.approx(
            cells.loc[cells["pass"], "n_genes_by_counts"].median()
        )
    assert np.isnan(general.loc["S3", "doublet_rate_pct"])  # skipped: left empty
    bars = mqc_table(files["sccohort_cells_mqc.tsv"])
    assert (bars.sum(axis=1) == general["cells_in"]).all()  # exclusive categories


def test_multiqc_reads_the_custom_content_offline(synthetic, tmp_path):
    _, inputs, _, _, _ = synthetic
    data = report_data.load(inputs)
    paths = {name: tmp_path / name for name in multiqc.custom_content(data.qc)}
    multiqc.write_custom_content(data.qc, paths)
    command = multiqc.multiqc_command(paths.values(), tmp_path / "out", "multiqc_report.html")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    general = pd.read_csv(
        tmp_path / "out" / "multiqc_report_data" / "multiqc_general_stats.txt", sep="\t", index_col=0
    )
    kept = general.filter(like="cells_kept").iloc[:, 0]
    assert kept.to_dict() == data.qc.set_index("sample")["cells_kept"].to_dict()
    assert (tmp_path / "out" / "multiqc_report.html").stat().st_size > 10_000
