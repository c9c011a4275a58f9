"""DAG-time checks of config values the schemas cannot judge (sccohort.config_checks), as units.

tests/workflow/test_bad_inputs.py checks that the workflow itself refuses the same faults when the
DAG is built; these tests pin down each check's rule and message.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import yaml
from helpers import REPO
from sccohort import config_checks, config_schema
from sccohort.errors import InputError

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def sheet(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "sample": ["S1", "S2", "S3", "S4"],
            "path": [f"data/S{i}" for i in range(1, 5)],
            "condition": ["COVID19", "COVID19", "Normal", "Normal"],
            "donor": ["d1", "d2", "d3", "d4"],
            "batch": ["S1", "S2", "S3", "S4"],
            **columns,
        }
    )
    return frame.set_index("sample", drop=False)


def config_with(**blocks) -> dict:
    config = copy.deepcopy(CONFIG)
    for block, values in blocks.items():
        if isinstance(values, dict):
            config[block].update(values)
        else:
            config[block] = values
    return config


def test_shipped_config_passes():
    config_checks.check_config(config_with(), sheet())


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ("", "results is empty"),
        ("  ", "results is empty"),
        ("/", "is the file system's root"),
        ("/tmp/..", "is the file system's root"),
        ("out_{date}", "wildcard"),
    ],
)
def test_results_folder_that_cannot_hold_outputs_is_refused(results, message):
    with pytest.raises(InputError, match=message):
        config_checks.check_config(config_with(results=results), sheet())


def test_results_folder_is_an_existing_folder_or_none_and_in_normal_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "samples.tsv").write_text("sample\n")
    with pytest.raises(InputError, match="results 'samples.tsv' is an existing file, not a folder"):
        config_checks.check_config(config_with(results="samples.tsv"), sheet())
    for written, normal in (("results/", "results"), ("./out//run1/", "out/run1"), ("results", "results")):
        config = config_with(results=written)
        config_checks.check_config(config, sheet())
        assert config["results"] == normal, written


@pytest.mark.parametrize(
    ("qc", "message"),
    [
        ({"hb_pattern": "^HB[AB"}, r"qc.hb_pattern '\^HB\[AB' is not a valid regular expression"),
        ({"mt_prefix": ""}, "qc.mt_prefix is empty"),
        ({"ribo_prefixes": ["RPS", ""]}, r"qc.ribo_prefixes\[1\] is empty"),
    ],
)
def test_qc_values_that_cannot_work_are_refused(qc, message):
    with pytest.raises(InputError, match=message):
        config_checks.check_config(config_with(qc=qc), sheet())


def test_explicit_mt_prefix_must_start_some_gene():
    symbols = ["MT-CO1", "CD3E", "mt-Nd1"]
    config_checks.check_mt_prefix_matches("auto", ["CD3E"])
    config_checks.check_mt_prefix_matches("mt-", symbols)
    with pytest.raises(InputError, match=r"qc.mt_prefix 'MT_' starts no gene.*MT-CO1, mt-Nd1"):
        config_checks.check_mt_prefix_matches("MT_", symbols)


@pytest.mark.parametrize("value", ["", "NA", "N/A", "nan", "#N/A"])
def test_blank_or_na_design_values_are_refused_naming_sample_and_column(value):
    config = config_with(de={"design": "~ donor + condition"})
    samples = sheet(donor=["d1", "d2", value, "d4"])
    with pytest.raises(InputError, match=r"sample 'S3', column 'donor'.*de.design '~ donor \+ condition'"):
        config_checks.check_config(config, samples)
    # without a contrast the design is never used: nothing to refuse
    config_checks.check_config(config_with(de={"design": "~ donor + condition", "contrasts": []}), samples)


@pytest.mark.parametrize("level", ["None", "null", "NULL"])
def test_words_that_only_look_missing_are_design_levels(level):
    samples = sheet(condition=[level, level, "Normal", "Normal"])
    config = config_with(de={"contrasts": [{"factor": "condition", "test": level, "reference": "Normal"}]})
    config_checks.check_config(config, samples)


def test_sample_ids_that_look_missing_are_ids():
    samples = sheet(sample=["NA", "None", "nan", "S4"], batch=["NA_", "b", "c", "d"])
    config_checks.check_config(
        config_with(cohort={"batch_keys": ["sample"]}), samples.set_index("sample", drop=False)
    )


def test_blank_batch_key_values_are_refused():
    samples = sheet(lane=["L1", "", "L2", "L2"])
    with pytest.raises(InputError, match=r"sample 'S2', column 'lane': empty; 'lane' is a batch column"):
        config_checks.check_config(config_with(cohort={"batch_keys": ["sample", "lane"]}), samples)


@pytest.mark.parametrize("group_by", ["cell_type", "leiden_0.25", "leiden_1.0", "sex"])
def test_de_group_by_accepts_columns_the_cohort_will_have(group_by):
    config_checks.check_config(config_with(de={"group_by": group_by}), sheet(sex=["F", "M", "F", "M"]))


@pytest.mark.parametrize(
    ("group_by", "message"),
    [
        (
            "celltype",
            r"de.group_by 'celltype' is not a column.*cell_type, cell_type_lineage, leiden_0.25, leiden_0.5, leiden_1.0",
        ),
        ("leiden_0.7", "is not a column the annotated cohort will have"),
        ("cell_type_celltypist", "is not a column"),  # no CellTypist model configured
        ("condition", "the sample id or a variable of de.design"),
        ("sample", "the sample id or a variable of de.design"),
    ],
)
def test_de_group_by_that_no_obs_column_matches_is_refused(group_by, message):
    with pytest.raises(InputError, match=message):
        config_checks.check_config(config_with(de={"group_by": group_by}), sheet())


def test_de_group_columns_follow_the_annotation_methods():
    config = config_with(annotation={"celltypist_model": "model.pkl"})
    columns = config_checks.de_group_columns(config, sheet())
    assert {"cell_type", "cell_type_lineage", "cell_type_celltypist", "cell_type_consensus"} <= set(columns)
    alone = config_checks.de_group_columns(config_with(), sheet())
    assert "cell_type_celltypist" not in alone and "cell_type_consensus" not in alone  # markers alone


def test_annotation_label_columns_agree_with_the_annotation_stage():
    from sccohort.annotate.marker_method import OBS_COLUMNS
    from sccohort.annotate.stage import LABEL_COLUMNS

    assert config_checks.ANNOTATION_LABEL_COLUMNS == LABEL_COLUMNS
    assert config_checks.LINEAGE_COLUMN in OBS_COLUMNS


def test_repeated_leiden_resolution_is_refused():
    with pytest.raises(InputError, match=r"lists the same resolution more than once \(leiden_1.0\)"):
        config_checks.check_config(config_with(cohort={"leiden_resolutions": [0.5, 1, 1.0]}), sheet())


def test_results_folder_apart_from_the_inputs(tmp_path):
    paths = [tmp_path / "data" / "S1", tmp_path / "data" / "S2", tmp_path / "qc" / "S3", tmp_path / "S4.h5"]
    samples = sheet(path=[str(p) for p in paths])
    for results, sample in ((paths[1] / "out", "S2"), (paths[1], "S2"), (tmp_path, "S3")):
        with pytest.raises(InputError, match=rf"and the input of sample '{sample}' .* overlap"):
            config_checks.check_config(config_with(results=str(results)), samples)
    for results in (tmp_path / "results", tmp_path / "data"):  # beside the inputs, or holding some
        config_checks.check_config(config_with(results=str(results)), samples)


def test_sample_with_fewer_cells_than_can_pass_is_refused_before_any_job():
    """An input with fewer barcodes than qc.min_cells_after_qc cannot pass QC: refused by name
    under failed_sample_policy fail; under drop it is left to be dropped at run time."""
    n_cells = {"s1": 300, "s2": 5}
    with pytest.raises(InputError, match=r"'s2' \(5 cells\).*min_cells_after_qc \(20\)"):
        config_checks.check_enough_cells(n_cells, min_cells=20, policy="fail")
    config_checks.check_enough_cells(n_cells, min_cells=20, policy="drop")
    config_checks.check_enough_cells(n_cells, min_cells=5, policy="fail")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 0\nqc:\n  min_genes: 3\n  min_genes: 4\n", "line 4: the option 'min_genes' is given twice"),
        ("seed: [0\nresults: r\n", r"line 2, column 8: not valid YAML \(expected ','"),
        ("- samples: x\n- results: r\n", "holds a list, not a mapping of options"),
        ("qc:\n\tmin_genes: 3\n", "line 2, column 1: not valid YAML"),
    ],
    ids=["repeated-option", "syntax", "list", "tab"],
)
def test_config_file_must_read_as_written(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        config_schema.check_config_file(path)


def test_config_files_that_read_as_written_pass(tmp_path):
    config_schema.check_config_file(REPO / "config" / "config.yaml")
    merged = tmp_path / "merge.yaml"  # a YAML merge key repeats nothing
    merged.write_text("base: &b {k: 1}\nother:\n  <<: *b\n  j: 2\n")
    config_schema.check_config_file(merged)


def test_slurm_profile_placeholders_are_refused():
    with pytest.raises(InputError, match="slurm_partition=YOUR_PARTITION still holds the SLURM profile's"):
        config_checks.check_resource_placeholders(["mem_mb=2000", "slurm_partition=YOUR_PARTITION"])
    with pytest.raises(InputError, match="YOUR_ACCOUNT"):
        config_checks.check_resource_placeholders(["slurm_account=YOUR_ACCOUNT"])
    config_checks.check_resource_placeholders(["slurm_partition=short", "mem_mb=2000"])
    config_checks.check_resource_placeholders(())
