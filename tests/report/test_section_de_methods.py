"""The DE section names the test that ran per contrast, counts tested and skipped groups, and
shows the contrast's composition test (table and figure)."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
from report.synthetic import write_png, write_synthetic
from sccohort.report.build import build_report


def test_de_section_names_the_test_and_shows_the_composition_test(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path)
    summary = pd.read_csv(inputs.de_summary, sep="\t")
    summary["method"] = "limma_voom"
    summary.to_csv(inputs.de_summary, sep="\t", index=False)
    folder = Path(tmp_path) / "results" / "composition"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "group": ["B", "T", "pDC"],
            "share_all": [0.3, 0.69, 0.01],
            "share_reference": [0.2, 0.79, 0.01],
            "share_test": [0.4, 0.6, 0.0],
            "share_ratio": [2.0, 0.75, 0.0],
            "log2_share_ratio": [1.0, -0.415, float("-inf")],
            "stat": [6.0, -2.0, -1.0],
            "pvalue": [0.001, 0.2, 0.3],
            "padj": [0.002, 0.2, 0.3],
            "called": [True, False, False],
        }
    ).to_csv(folder / "stim_vs_ctrl.tsv", sep="\t", index=False)
    write_png(folder / "stim_vs_ctrl.png", "composition")
    inputs.composition_tests = {"stim_vs_ctrl": str(folder / "stim_vs_ctrl.tsv")}
    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    assert "Test: limma-voom" in text
    assert "2 group(s) tested, 1 skipped" in text
    assert "changed shares at adjusted p-value &lt; 0.05: B" in text
    # a type absent from the test samples: said in words, not "-inf"
    assert "absent in test" in text and "-inf" not in text
    encoded = base64.b64encode((folder / "stim_vs_ctrl.png").read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{encoded}"' in text
    # An older summary without the method column: PyDESeq2 ran; no composition file: no block.
    summary.drop(columns="method").to_csv(inputs.de_summary, sep="\t", index=False)
    inputs.composition_tests = {}
    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    assert "Test: PyDESeq2 Wald test" in text and "Cell-type composition" not in text
