"""The export block resolved when the DAG is built: per-sample CELLxGENE metadata from the sheet
or the config, bad values as errors naming the option or the sheet column and sample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from sccohort.errors import InputError
from sccohort.export import check_export_config

REPO = Path(__file__).resolve().parents[2]


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def sheet(**extra) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "sample": ["a", "b"],
            "path": ["a.h5", "b.h5"],
            "condition": ["x", "y"],
            "donor": ["d1", "d2"],
            **extra,
        }
    )
    return frame.set_index("sample", drop=False)


def test_defaults_and_sheet_overrides():
    settings = check_export_config(
        default_config(), sheet(disease_ontology_term_id=["MONDO:0100096", ""]), REPO
    )
    assert settings["cellxgene"] and settings["cellbrowser"]
    a, b = settings["samples"]["a"], settings["samples"]["b"]
    assert a["disease_ontology_term_id"] == "MONDO:0100096"
    assert b["disease_ontology_term_id"] == "PATO:0000461"  # empty cell: the config default
    assert a["donor_id"] == "d1" and a["is_primary_data"] is True and a["suspension_type"] == "cell"
    assert settings["organism"] == "NCBITaxon:9606" and Path(settings["gene_reference"]).is_file()
    assert settings["title"] == default_config()["report"]["title"]
    assert settings["cell_type_ontology"]["T"] == "CL:0000084"


@pytest.mark.parametrize(
    ("sheet_extra", "metadata", "message"),
    [
        (
            {"assay_ontology_term_id": ["10x v3", ""]},
            {},
            "sample sheet column assay_ontology_term_id of sample 'a'",
        ),
        ({}, {"suspension_type": "cells"}, "export.cellxgene_metadata.suspension_type"),
        ({}, {"sex_ontology_term_id": "male"}, "sex_ontology_term_id 'male'"),
        ({}, {"donor_column": "patient"}, "donor_column 'patient'"),
        ({}, {"organism_ontology_term_id": "NCBITaxon:7955"}, "no shipped gene reference"),
        ({"is_primary_data": ["maybe", ""]}, {}, "is_primary_data"),
    ],
)
def test_bad_metadata_is_an_error_naming_where(sheet_extra, metadata, message):
    config = default_config()
    config["export"]["cellxgene_metadata"].update(metadata)
    with pytest.raises(InputError, match=message):
        check_export_config(config, sheet(**sheet_extra), REPO)


def test_export_off_needs_no_metadata():
    config = default_config()
    config["export"] = {
        "cellxgene": False,
        "cellbrowser": False,
        "cellxgene_metadata": {"donor_column": "nope"},
    }
    assert check_export_config(config, sheet(), REPO) == {"cellxgene": False, "cellbrowser": False}
