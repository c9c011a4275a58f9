"""sccohort.de.design: estimable designs, and the de: config checked against the sheet at DAG time."""

from __future__ import annotations

import pandas as pd
import pytest
from sccohort.de import check_de_config
from sccohort.de.design import design_problem
from sccohort.errors import InputError


def test_design_problem_rank_and_residual_degrees_of_freedom():
    meta = pd.DataFrame(
        {"condition": ["a", "a", "b", "b"], "donor": ["d1", "d2", "d1", "d2"], "batch": ["x", "x", "y", "y"]},
        index=["s1", "s2", "s3", "s4"],
    )
    contrast = {"factor": "condition", "test": "b", "reference": "a"}
    assert design_problem(meta, design="~ condition", **contrast) is None
    assert design_problem(meta, design="~ donor + condition", **contrast) is None
    confounded = design_problem(meta, design="~ batch + condition", **contrast)
    assert "confounded" in confounded and "batch[T.y]" in confounded and "condition[T.b]" in confounded
    two = meta.iloc[[0, 2]]
    assert "no residual degree of freedom" in design_problem(two, design="~ condition", **contrast)


# ---------------------------------------------------------------------------------------------
# Config checks at DAG time
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sheet() -> pd.DataFrame:
    rows = {
        "sample": ["s1", "s2", "s3", "s4", "s5"],
        "path": ["x"] * 5,
        "condition": ["ctrl", "ctrl", "stim", "stim", "stim"],
        "donor": ["d1", "d2", "d1", "d2", "d3"],
        "batch": ["b1", "b2", "b1", "b2", "b1"],
        "site": ["A", "A", "B", "B", "B"],
    }
    return pd.DataFrame(rows).set_index("sample", drop=False)


def config_with(**de_block) -> dict:
    block = {
        "design": "~ condition",
        "contrasts": [{"factor": "condition", "test": "stim", "reference": "ctrl"}],
        "min_replicates": 2,
    }
    block.update(de_block)
    return {"samples": "config/samples.tsv", "de": block}


def test_check_de_config_normalises_contrasts(sheet):
    contrasts = check_de_config(config_with(), sheet)
    assert contrasts == [{"name": "stim_vs_ctrl", "factor": "condition", "test": "stim", "reference": "ctrl"}]
    named = config_with(
        design="~ donor + condition",
        contrasts=[{"name": "IFN", "factor": "condition", "test": "stim", "reference": "ctrl"}],
    )
    assert check_de_config(named, sheet)[0]["name"] == "IFN"
    assert check_de_config(config_with(contrasts=[]), sheet) == []


@pytest.mark.parametrize(
    ("de_block", "expected"),
    [
        ({"design": "~ age + condition"}, r"de.design .* uses 'age'.*not a column"),
        ({"design": "~ condition +* donor"}, r"not a valid formula"),
        (
            {"contrasts": [{"factor": "treatment", "test": "stim", "reference": "ctrl"}]},
            r"'treatment' is not a column",
        ),
        (
            {"contrasts": [{"factor": "donor", "test": "d1", "reference": "d2"}]},
            r"'donor' is not in de.design",
        ),
        (
            {"contrasts": [{"factor": "condition", "test": "IFN", "reference": "ctrl"}]},
            r"test level 'IFN'.*values: ctrl, stim",
        ),
        (
            {"contrasts": [{"factor": "condition", "test": "stim", "reference": "control"}]},
            r"reference level 'control'",
        ),
        ({"contrasts": [{"factor": "condition", "test": "stim", "reference": "stim"}]}, r"both 'stim'"),
        ({"min_replicates": 3}, r"level 'ctrl' of 'condition' has 2 sample\(s\).*min_replicates = 3"),
        (
            {"contrasts": [{"factor": "condition", "test": "stim", "reference": "ctrl"}] * 2},
            r"name 'stim_vs_ctrl' is already used by de.contrasts\[0\]",
        ),
        ({"design": "~ site + condition"}, r"not estimable.*site\[T.B\].*condition\[T.stim\]"),
        (
            {
                "contrasts": [
                    {"name": "pseudobulk", "factor": "condition", "test": "stim", "reference": "ctrl"}
                ]
            },
            "reserved",
        ),
    ],
)
def test_check_de_config_rejects_bad_contrasts(sheet, de_block, expected):
    with pytest.raises(InputError, match=expected):
        check_de_config(config_with(**de_block), sheet)


def test_bad_contrast_fails_before_any_job_runs(project_factory):
    """A contrast level that is not in the sheet stops `snakemake -n` with a message naming it."""
    from helpers import run_workflow

    project = project_factory(
        "de_bad_level",
        n_cells=50,
        config_overrides={
            "de": {"contrasts": [{"factor": "condition", "test": "COVID-19", "reference": "Normal"}]}
        },
    )
    result = run_workflow(project, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "test level 'COVID-19' is not a value of column 'condition'" in output
    assert "COVID19, Normal" in output
    assert not (project / "results").exists()
