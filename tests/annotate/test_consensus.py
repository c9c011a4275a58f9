"""The consensus label of each cell across methods (sccohort.annotate.consensus)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sccohort.annotate.consensus import consensus_labels
from sccohort.names import UNKNOWN


def test_consensus_agreement_and_unknown_on_disagreement():
    """Three methods, the other two in their own vocabulary (translated by the cells they share
    with the marker labels): agreement is the share of methods that agree (a parent agrees with
    its child); under min_agreement the consensus is Unknown."""
    markers = pd.Series(["CD4_T"] * 4 + ["CD8_T"] * 4 + ["B"] * 4 + ["T", "B", "CD4_T", UNKNOWN])
    celltypist = pd.Series(
        ["CD4 T cells"] * 4
        + ["CD8 T cells"] * 4
        + ["B cells"] * 4
        + ["CD8 T cells", "CD4 T cells", "B cells", "B cells"]
    )
    reference = pd.Series(["CD4"] * 4 + ["CD8"] * 4 + ["B"] * 4 + ["CD8", "B", "CD8", UNKNOWN])
    out = consensus_labels(
        {"markers": markers, "celltypist": celltypist, "reference": reference},
        parents={"CD4_T": "T", "CD8_T": "T"},
        min_agreement=0.6,
    )
    assert list(out["label"][:12]) == list(markers[:12]) and (out["agreement"][:12] == 1.0).all()
    # T (markers) is the parent of CD8_T (the two others): all agree, the finer label wins the vote
    assert out["label"][12] == "CD8_T" and out["agreement"][12] == 1.0
    # B by two of three methods
    assert out["label"][13] == "B" and np.isclose(out["agreement"][13], 2 / 3, atol=1e-3)
    # three different labels: Unknown
    assert out["label"][14] == UNKNOWN and np.isclose(out["agreement"][14], 1 / 3, atol=1e-3)
    # one method left: its agreement is 1/3 < 0.6
    assert out["label"][15] == UNKNOWN
    # two methods must both agree (0.5 < 0.6): a parent and its child do; a tie goes to the markers
    two = consensus_labels(
        {"markers": markers, "celltypist": celltypist},
        parents={"CD4_T": "T", "CD8_T": "T"},
        min_agreement=0.6,
    )
    assert list(two["label"][12:]) == ["T", UNKNOWN, UNKNOWN, UNKNOWN]
