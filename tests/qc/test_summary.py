"""The cross-sample QC summary: every sample side by side, thresholds with what set them, warnings."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from sccohort.names import REMOVAL_REASONS
from sccohort.qc import summary


def record(sample: str, *, warnings=None, floor_wins: bool = False) -> dict:
    counts = {
        "lower": 250.0 if floor_wins else 180.0,
        "lower_source": "config qc.min_counts"
        if floor_wins
        else "adaptive: median 5 MADs on log1p (config qc.n_mads_counts)",
        "upper": 9000.0,
        "upper_source": "adaptive: median 5 MADs on log1p (config qc.n_mads_counts)",
        "median": 520.0,
    }
    out = {
        "sample": sample,
        "qc": {
            "total_counts": counts,
            "n_genes_by_counts": {
                "lower": 200.0,
                "lower_source": "sample sheet column min_genes",
                "upper": None,
                "upper_source": "none",
                "median": 310.0,
            },
            "pct_counts_mt": {
                "lower": None,
                "lower_source": "none",
                "upper": 12.5,
                "upper_source": "adaptive: median + 3 MADs (config qc.n_mads_mt)",
                "median": 4.0,
            },
        },
        "doublets": {"threshold": 0.3},
        "status": {"sample": sample, "n_cells_input": 4, "n_cells_kept": 2, "dropped": False},
        "notes": [],
    }
    if warnings is not None:
        out["warnings"] = warnings
    return out


def cells() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "total_counts": [100.0, 600, 700, 5000],
            "n_genes_by_counts": [90.0, 300, 320, 1500],
            "pct_counts_mt": [2.0, 3, 4, 30],
            "pass": [False, True, True, False],
            "fail_reason": ["low_counts;low_genes", "", "", "high_pct_mt;doublet"],
        }
    )


def test_summary_frame_has_every_sample_side_by_side():
    records = {"A": record("A", floor_wins=True), "B": record("B")}
    frame = summary.summary_frame(records, {"A": cells(), "B": cells()})
    assert list(frame["sample"]) == ["A", "B"]
    assert list(frame["kept"]) == [2, 2] and list(frame["pct_kept"]) == [50.0, 50.0]
    assert {f"removed_{r}" for r in REMOVAL_REASONS} <= set(frame.columns)
    assert frame.loc[0, "removed_low_counts"] == 1 and frame.loc[0, "removed_doublet"] == 1
    # a fixed floor names its option and the sample's median; an adaptive limit says so
    assert frame.loc[0, "total_counts lower"] == "250 (qc.min_counts; median 520 counts)"
    assert frame.loc[1, "total_counts lower"] == "180 (adaptive)"
    assert frame.loc[0, "n_genes_by_counts lower"] == "200 (sheet column min_genes; median 310 genes)"
    assert "pct_counts_mt lower" not in frame  # no sample has one


@pytest.mark.parametrize(
    "warnings",
    [
        None,  # thresholds.json written before the QC stage stored warnings
        ["Sample A: qc.min_counts (250) removes 46% of cells; median 508 counts. Lower qc.min_counts."],
        [{"message": "Sample A: qc.min_counts (250) removes 46% of cells; median 508 counts"}],
        [{"option": "qc.min_counts", "removed_fraction": 0.46, "median": 508}],
    ],
)
def test_warnings_of_thresholds_json_are_shown_and_logged(warnings, tmp_path, caplog):
    records = {"A": record("A", warnings=warnings), "B": record("B")}
    found = summary.all_warnings(records)
    assert len(found) == (0 if warnings is None else 1)
    if warnings:
        assert "qc.min_counts" in found[0] and "Sample A" in found[0]
    paths = {}
    for sample, rec in records.items():
        import json

        paths[sample] = (tmp_path / f"{sample}.json", tmp_path / f"{sample}.tsv.gz")
        paths[sample][0].write_text(json.dumps(rec))
        cells().to_csv(paths[sample][1], sep="\t", index=False)
    log = logging.getLogger("test_qc_summary")
    with caplog.at_level(logging.INFO, logger="test_qc_summary"):
        summary.qc_summary(
            thresholds_jsons=[str(p[0]) for p in paths.values()],
            cells_tables=[str(p[1]) for p in paths.values()],
            samples=list(paths),
            html=str(tmp_path / "summary.html"),
            table=str(tmp_path / "summary.tsv"),
            metrics_png=str(tmp_path / "m.png"),
            removed_png=str(tmp_path / "r.png"),
            log=log,
        )
    page = (tmp_path / "summary.html").read_text()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warnings:
        assert found[0] in logged and 'class="warn"' in page and "qc.min_counts" in page
    else:
        assert not logged and 'class="warn"' not in page
    assert 'href="A/report.html"' in page and 'href="B/report.html"' in page
    table = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert list(table["sample"]) == ["A", "B"] and list(table["n_warnings"]) == [len(found), 0]
    assert (tmp_path / "m.png").stat().st_size > 1000
