"""Caveats shown beside a DE group: few residual degrees of freedom, contamination genes among the calls."""

from __future__ import annotations

import pandas as pd
import pytest
from sccohort.report import de_warnings


def metadata(n_test: int, n_ref: int, donors: int | None = None) -> pd.DataFrame:
    samples = [f"s{i}" for i in range(n_test + n_ref)]
    return pd.DataFrame(
        {
            "sample": samples,
            "group_file": "B",
            "condition": ["test"] * n_test + ["ref"] * n_ref,
            "donor": [f"d{i % (donors or len(samples))}" for i in range(len(samples))],
        }
    )


@pytest.mark.parametrize(
    ("n_test", "n_ref", "design", "donors", "expected"),
    [
        (2, 2, "~ condition", None, 2),
        (3, 3, "~ condition", None, 4),
        (3, 3, "~ donor + condition", 3, 2),  # paired: 6 samples - (1 + 2 donors + 1)
        (2, 2, "~ nope", None, None),
    ],
)
def test_residual_df(n_test, n_ref, design, donors, expected):
    assert de_warnings.residual_df(metadata(n_test, n_ref, donors), design) == expected


def de_table(genes: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(g, lfc, padj) for g, (lfc, padj) in genes.items()], columns=["gene", "log2FoldChange", "padj"]
    )


def test_platelet_and_alarmin_calls_are_flagged_outside_their_own_cell_types():
    table = de_table({"PPBP": (5.8, 0.01), "PF4": (4.0, 0.2), "S100A8": (2.0, 0.001), "IFI27": (3.0, 0.001)})
    found = de_warnings.contamination_calls(table, "B", 0.05)
    assert found == {"platelets": ["PPBP up"], "monocytes / neutrophils (S100A8/9)": ["S100A8 up"]}
    assert "platelets" not in de_warnings.contamination_calls(table, "Platelet", 0.05)
    assert de_warnings.contamination_calls(table, "CD14_Mono", 0.05) == {"platelets": ["PPBP up"]}


def test_group_warnings_name_contrast_group_and_what_to_do():
    table = de_table({"PPBP": (5.8, 0.01), "MS4A1": (1.0, 0.01)})
    messages = de_warnings.group_warnings(
        contrast="stim_vs_ctrl",
        group="B",
        table=table,
        metadata=metadata(2, 2),
        samples=["s0", "s1", "s2", "s3"],
        design="~ condition",
        alpha=0.05,
    )
    assert len(messages) == 2
    assert messages[0].startswith(
        "DE stim_vs_ctrl / B: 4 pseudobulk samples for design ~ condition leave 2 residual"
    )
    # the caveat holds for every test: it names none (the default is limma-voom, not PyDESeq2)
    assert "whatever the test" in messages[0] and "PyDESeq2" not in messages[0]
    assert "PPBP up among the calls" in messages[1] and "SoupX" in messages[1]
    quiet = de_warnings.group_warnings(
        contrast="stim_vs_ctrl",
        group="B",
        table=de_table({"MS4A1": (1.0, 0.01)}),
        metadata=metadata(3, 3),
        samples=[f"s{i}" for i in range(6)],
        design="~ condition",
        alpha=0.05,
    )
    assert quiet == []
