"""A filter that removes a large share of a sample is named, with its numbers, in thresholds.json,
the log-facing list, the sample's QC page and the cross-sample summary."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from sccohort.qc import doublets, fate, page, summary


def status(removed: dict, n_input: int = 1000) -> dict:
    return {"sample": "S1", "n_cells_input": n_input, "removed_by_reason": removed}


def test_removal_warning_names_the_filter_and_its_share():
    found = fate.removal_warnings(status({"damaged": 250, "doublet": 40, "low_genes": 200}), limit=0.2)
    assert [w["reason"] for w in found] == ["damaged"]
    warning = found[0]
    assert warning["removed"] == 250 and warning["fraction"] == 0.25 and warning["limit"] == 0.2
    assert "damaged removed 250 of 1,000 cells (25.0%)" in warning["message"]
    assert "qc.warn_removed_fraction (20%)" in warning["message"]
    assert fate.removal_warnings(status({"damaged": 250}), limit=None) == []
    assert fate.removal_warnings(status({"damaged": 200}), limit=0.2) == []  # "more than" the share


def test_warnings_reach_thresholds_json_the_page_and_the_summary():
    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    adata.uns["qc_thresholds"] = {"total_counts": {"lower": 10.0}}
    adata.uns["qc_metric_notes"] = {"mt_prefix": "MT-"}
    state = status({"high_pct_mt": 400})
    warnings = fate.removal_warnings(state, limit=0.2)
    info = {
        "expected_rate": 0.05,
        "expected_rate_used": "data",
        "expected_rate_source": "estimated from the data",
        "simulated_scores": np.array([0.1, 0.5]),
    }
    record = doublets.thresholds_record(adata, info, state, sample="S1", warnings=warnings)
    assert record["warnings"] == warnings and record["doublets"]["expected_rate_used"] == "data"
    message = warnings[0]["message"]
    assert message in page.page_warnings(record)
    assert message in summary.sample_warnings(record)


def test_cells_table_keeps_every_barcode_and_the_doublet_evidence():
    obs = pd.DataFrame(
        {
            "total_counts": [500.0, 900.0, 50.0],
            "qc_pass": [True, True, False],
            "fail_reason": ["", "", "low_counts"],
            "doublet_score": [0.2, 0.99, np.nan],
            "doublet_score_scrublet": [0.1, 0.6, np.nan],
            "doublet_score_mixture": [0.0, 0.3, np.nan],
            "damage_z_mt": [0.5, 1.0, np.nan],
            "damage_z_counts": [0.1, -0.3, np.nan],
            "predicted_doublet": [False, True, False],
        },
        index=["a", "b", "c"],
    )
    kept, table, state = fate.finalise_sample(
        ad.AnnData(obs=obs),
        doublet_action="remove",
        min_cells_after_qc=1,
        failed_sample_policy="fail",
        sample="S",
    )
    assert list(table["barcode"]) == ["a", "b", "c"] and kept.n_obs == 1
    assert list(table["fail_reason"]) == ["", "doublet", "low_counts"]
    for column in ("doublet_score_scrublet", "doublet_score_mixture", "damage_z_mt", "damage_z_counts"):
        assert column in table
    assert state["removed_by_reason"] == {"doublet": 1, "low_counts": 1}
