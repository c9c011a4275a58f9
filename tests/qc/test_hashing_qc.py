"""Shipped QC defaults on real shallow 3' data (GSE108313 hashing PBMCs, ~520 UMI per cell) and the
optional species check on its human-mouse mix (tests/data/hashing, see its PROVENANCE.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sccohort.qc.load import read_sample
from sccohort.qc.metrics import run_qc

REPO = Path(__file__).resolve().parents[2]
HASHING = REPO / "tests" / "data" / "hashing"
SAMPLES = ("htoC", "htoE")


@pytest.fixture(scope="module")
def shipped_qc() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())["qc"]


@pytest.fixture(scope="module", params=SAMPLES)
def shallow_sample(request):
    return read_sample(HASHING / request.param)


def test_shipped_floors_keep_most_cells_of_shallow_data(shallow_sample, shipped_qc):
    """qc.min_counts 500 sat at these samples' median and removed about half of each; the shipped
    floors stay far below it: the fixed floors remove (almost) nothing the MAD limits keep."""
    adata, thresholds = run_qc(shallow_sample.copy(), qc_options=shipped_qc)
    reasons = adata.obs["fail_reason"]
    assert 450 < thresholds["total_counts"]["median"] < 600  # the data really is shallow
    assert adata.obs["qc_pass"].mean() > 0.85
    assert reasons.str.contains("low_counts").mean() < 0.05
    assert reasons.str.contains("low_genes").mean() < 0.05
    for metric, floor in (("total_counts", "min_counts"), ("n_genes_by_counts", "min_genes")):
        assert shipped_qc[floor] < 0.6 * thresholds[metric]["median"], f"qc.{floor} is near the median"


def test_species_check_removes_the_mouse_rich_cells_only(shallow_sample, shipped_qc):
    options = {**shipped_qc, "other_species_prefix": "MOUSE_"}
    adata, thresholds = run_qc(shallow_sample.copy(), qc_options=options)
    share = adata.obs["pct_counts_other_species"]
    assert int(adata.var["other_species"].sum()) == 100
    assert thresholds["pct_counts_other_species"]["upper"] == shipped_qc["max_pct_other_species"]
    assert thresholds["pct_counts_other_species"]["upper_source"] == "config qc.max_pct_other_species"
    flagged = adata.obs["fail_reason"].str.contains("high_pct_other_species")
    assert flagged.sum() >= 4 and (flagged == (share > shipped_qc["max_pct_other_species"])).all()
    assert share.median() < 1  # a human cell carries well under 1 % mouse counts
    # without the option nothing changes: no column, no reason
    plain, plain_thresholds = run_qc(shallow_sample.copy(), qc_options=shipped_qc)
    assert "pct_counts_other_species" not in plain.obs and "pct_counts_other_species" not in plain_thresholds
    assert not plain.obs["fail_reason"].str.contains("other_species").any()
    unflagged = ~flagged.to_numpy()
    assert (
        plain.obs["fail_reason"].to_numpy()[unflagged] == adata.obs["fail_reason"].to_numpy()[unflagged]
    ).all()


def test_species_prefix_matching_no_gene_is_noted(shallow_sample, shipped_qc):
    adata, _ = run_qc(shallow_sample.copy(), qc_options={**shipped_qc, "other_species_prefix": "RAT_"})
    assert (adata.obs["pct_counts_other_species"] == 0).all()
    assert (
        "no gene starts with qc.other_species_prefix 'RAT_'" in adata.uns["qc_metric_notes"]["other_species"]
    )
