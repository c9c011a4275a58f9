"""Fixtures of the report's tests: one report built from synthetic stage outputs with hostile
names (a condition, a cell type and a gene that carry markup)."""

from __future__ import annotations

import pytest
from report.synthetic import HOSTILE_CONDITION, HOSTILE_TYPE, write_synthetic
from sccohort.report.build import build_report


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """(root, inputs, config, sheet, report text); the report is also written to results/."""
    root = tmp_path_factory.mktemp("synthetic_report")
    inputs, config, sheet = write_synthetic(
        root,
        conditions=("ctrl", "ctrl", HOSTILE_CONDITION, HOSTILE_CONDITION),
        cell_types=("T", HOSTILE_TYPE, "Unknown"),
    )
    text = build_report(
        inputs,
        config,
        sheet=sheet,
        versions={"scanpy": "1.11.5", "<evil>": "1"},
        checksum_paths={"sample sheet": inputs.thresholds["S1"]},
        report_path=root / "results" / "report.html",
    )
    (root / "results" / "report.html").write_text(text)
    return root, inputs, config, sheet, text
