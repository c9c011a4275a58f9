"""Composition tables per sample and per condition (sccohort.annotate.composition)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from annotate.annotation_data import KEY, MARKERS
from sccohort.annotate.composition import composition
from sccohort.annotate.marker_method import annotate_markers


def test_composition_tables(kang_query, markers):
    adata = kang_query.copy()
    annotate_markers(adata, markers, cluster_key=KEY, marker_path=MARKERS)
    obs = adata.obs.rename(columns={"sample_id": "sample"})
    per_sample, per_condition = composition(obs)
    sizes = obs["sample"].value_counts()
    totals = per_sample.groupby("sample")["n_cells"].sum()
    assert (totals == sizes.reindex(totals.index)).all()
    assert np.allclose(per_sample.groupby("sample")["fraction"].sum(), 1.0)
    assert (
        per_sample.drop_duplicates("sample").set_index("sample")["condition"]
        == obs.groupby("sample", observed=True)["condition"].first().astype(str)
    ).all()
    direct = pd.crosstab(obs["sample"], obs["cell_type"], normalize="index")
    for row in per_condition.itertuples():
        members = obs.loc[obs["condition"] == row.condition, "sample"].unique()
        assert row.mean_sample_fraction == pytest.approx(direct.loc[members, row.cell_type].mean(), abs=1e-6)
        assert row.n_samples == len(members)
    pooled = per_condition.groupby("condition")["fraction_pooled"].sum()
    assert np.allclose(pooled, 1.0)
