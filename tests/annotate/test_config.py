"""The annotation block of the config, checked when the DAG is built (sccohort.annotate.config)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from annotate.annotation_data import MARKERS, REPO
from sccohort.annotate import check_annotation_config
from sccohort.errors import InputError


def test_config_paths_fall_back_to_the_workflow_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {
        "cohort": {"leiden_resolutions": [0.25, 0.5, 1.0], "default_resolution": 0.5},
        "annotation": {"markers": "workflow/resources/markers/human_pbmc.tsv", "resolution": None},
    }
    settings = check_annotation_config(config, REPO)
    assert Path(settings["markers"]) == MARKERS
    assert settings["cluster_key"] == "leiden_0.5" and settings["methods"] == ["markers"]
    # A local file of the same name wins over the shipped one.
    local = tmp_path / "workflow" / "resources" / "markers"
    local.mkdir(parents=True)
    shutil.copy(MARKERS, local / "human_pbmc.tsv")
    assert (
        Path(check_annotation_config(config, REPO)["markers"]).resolve()
        == (local / "human_pbmc.tsv").resolve()
    )
    with pytest.raises(InputError, match="annotation.resolution 2.0"):
        check_annotation_config({**config, "annotation": {**config["annotation"], "resolution": 2}}, REPO)
    with pytest.raises(InputError, match="celltypist_model"):
        check_annotation_config(
            {**config, "annotation": {**config["annotation"], "celltypist_model": "models/none.pkl"}}, REPO
        )
