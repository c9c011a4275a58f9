"""Sample sheet and config are checked when the DAG is built, with messages naming what to fix."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from helpers import REPO, make_project, run_workflow
from sccohort.errors import InputError
from sccohort.sheet import check_sample_sheet, covariate_columns, read_sample_sheet, sample_override


def write_sheet(tmp_path, rows, columns=("sample", "path", "condition", "donor")):
    (tmp_path / "data").mkdir(exist_ok=True)
    for row in rows:
        (tmp_path / row[1]).mkdir(parents=True, exist_ok=True) if row[1] else None
    path = tmp_path / "samples.tsv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, sep="\t", index=False)
    return path


def check(tmp_path, rows, columns=("sample", "path", "condition", "donor")):
    path = write_sheet(tmp_path, rows, columns)
    return check_sample_sheet(read_sample_sheet(path), path, workdir=tmp_path)


def test_valid_sheet_gets_batch_and_keeps_covariates(tmp_path):
    sheet = check(
        tmp_path,
        [("S1", "data/S1", "ctrl", "d1", "F"), ("S2", "data/S2", "stim", "d1", "M")],
        ("sample", "path", "condition", "donor", "sex"),
    )
    assert list(sheet["batch"]) == ["S1", "S2"]
    assert covariate_columns(sheet) == ["sample", "condition", "donor", "sex", "batch"]


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        (
            [("S1", "data/S1", "c", "d"), ("S1", "data/S2", "c", "d")],
            None,
            r"'S1' appears more than once \(lines 2, 3\)",
        ),
        ([("S 1", "data/S1", "c", "d")], None, r"line 2, column 'sample'.*'S 1' is not allowed"),
        ([("S1", "data/S1", "c")], ("sample", "path", "condition"), "lacks the required column.*donor"),
        ([("S1", "", "c", "d")], None, "column 'path' is empty"),
        (
            [("S1", "data/S1", "c", "d", "abc")],
            ("sample", "path", "condition", "donor", "min_genes"),
            "column 'min_genes': 'abc' is not a number",
        ),
        (
            [("S1", "data/S1", "c", "d", "0.9")],
            ("sample", "path", "condition", "donor", "expected_doublet_rate"),
            "out of range",
        ),
        (
            [("S1", "data/S1", "c", "d", "x")],
            ("sample", "path", "condition", "donor", "doublet_score"),
            "names the workflow writes itself",
        ),
    ],
    ids=[
        "duplicate-id",
        "illegal-id",
        "missing-column",
        "empty-path",
        "bad-override",
        "rate-range",
        "reserved",
    ],
)
def test_bad_sheets_are_refused_by_name(tmp_path, rows, columns, message):
    with pytest.raises(InputError, match=message):
        check(tmp_path, rows, columns or ("sample", "path", "condition", "donor"))


def test_missing_input_names_sample_and_path(tmp_path):
    path = tmp_path / "samples.tsv"
    pd.DataFrame(
        [("S1", "nowhere/S1.h5", "c", "d")], columns=["sample", "path", "condition", "donor"]
    ).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"input 'nowhere/S1.h5' of sample 'S1' does not exist"):
        check_sample_sheet(read_sample_sheet(path), path, workdir=tmp_path)


def test_comma_separated_sheet_is_named(tmp_path):
    path = tmp_path / "samples.tsv"
    path.write_text("sample,path,condition,donor\nS1,x,c,d\n")
    with pytest.raises(InputError, match="comma-separated"):
        check_sample_sheet(read_sample_sheet(path), path, workdir=tmp_path)


def test_repeated_column_names_are_refused_not_renamed(tmp_path):
    # pandas would read the second `condition` as `condition.1`, a covariate of its own
    (tmp_path / "data" / "S1").mkdir(parents=True)
    path = tmp_path / "samples.tsv"
    path.write_text("sample\tpath\tcondition\tdonor\tcondition\nS1\tdata/S1\tctrl\td1\tstim\n")
    with pytest.raises(InputError, match=r"column\(s\) 'condition' more than once"):
        check_sample_sheet(read_sample_sheet(path), path, workdir=tmp_path)


def test_unnamed_column_and_long_rows_are_refused(tmp_path):
    (tmp_path / "data" / "S1").mkdir(parents=True)
    path = tmp_path / "samples.tsv"
    path.write_text("sample\tpath\tcondition\tdonor\t\nS1\tdata/S1\tctrl\td1\tx\n")
    with pytest.raises(InputError, match="column 5 of the header line has no name"):
        check_sample_sheet(read_sample_sheet(path), path, workdir=tmp_path)
    # one field more than the header: pandas would make the first column the index
    path.write_text("sample\tpath\tcondition\tdonor\nS1\tdata/S1\tctrl\td1\textra\n")
    with pytest.raises(InputError, match="stray tabs"):
        read_sample_sheet(path)


def test_two_rows_reading_one_input_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"lines 2 and 3: samples 'S1' and 'S2' read the same input"):
        check(tmp_path, [("S1", "data/S1", "c", "d1"), ("S2", "data/../data/S1", "c", "d2")])


def test_sheet_text_as_written(tmp_path):
    """NA, None and null are values, a BOM is dropped, lines of tabs are skipped; lines keep their numbers."""
    for name in ("S1", "S2"):
        (tmp_path / "data" / name).mkdir(parents=True)
    path = tmp_path / "samples.tsv"
    text = "sample\tpath\tcondition\tdonor\nNA\tdata/S1\tNone\tnull\n\t\t\t\nS 2\tdata/S2\tc\td\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    sheet = read_sample_sheet(path)
    assert list(sheet.columns) == ["sample", "path", "condition", "donor"]
    assert sheet.loc[0].tolist() == ["NA", "data/S1", "None", "null"]
    with pytest.raises(InputError, match="line 4, column 'sample'"):
        check_sample_sheet(sheet, path, workdir=tmp_path)
    path.write_bytes("sample\tpath\tcondition\tdonor\nS1\tdata/S1\tna\xefve\td\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_sample_sheet(path)


def test_sample_override_reads_numbers_and_blanks():
    assert sample_override({"min_genes": "250"}, "min_genes") == 250
    assert sample_override({"min_genes": ""}, "min_genes") is None
    assert sample_override({}, "min_genes") is None


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    # One sample per condition: DE (which needs replicates) is switched off here.
    return make_project(
        tmp_path_factory.mktemp("sheet"),
        samples=("nCoV_PBMC_1", "Normal_PBMC_5"),
        n_cells=60,
        config_overrides={"de": {"contrasts": []}},
    )


def dry_run(project, config_edit=None, sheet_edit=None):
    config_path = project / "config" / "config.yaml"
    sheet_path = project / "config" / "samples.tsv"
    config_text, sheet_text = config_path.read_text(), sheet_path.read_text()
    try:
        if config_edit:
            config = yaml.safe_load(config_text)
            config_edit(config)
            config_path.write_text(yaml.safe_dump(config))
        if sheet_edit:
            sheet_path.write_text(sheet_edit(sheet_text))
        return run_workflow(project, "-n", check=False)
    finally:
        config_path.write_text(config_text)
        sheet_path.write_text(sheet_text)


def test_dag_time_errors_name_the_fault(tiny_project):
    ok = dry_run(tiny_project)
    assert ok.returncode == 0, ok.stderr[-3000:]
    result = dry_run(
        tiny_project, sheet_edit=lambda text: text.replace("Normal_PBMC_5\t", "Normal PBMC 5\t", 1)
    )
    assert result.returncode != 0
    assert "sample id 'Normal PBMC 5' is not allowed" in result.stderr + result.stdout
    result = dry_run(tiny_project, config_edit=lambda c: c["qc"].update(n_mads_mt=-1))
    assert result.returncode != 0
    assert "n_mads_mt" in result.stderr + result.stdout
    result = dry_run(tiny_project, config_edit=lambda c: c["cohort"].update(default_resolution=0.7))
    assert result.returncode != 0
    assert "default_resolution 0.7 is not one of" in result.stderr + result.stdout
    assert not (tiny_project / "results").exists()


def test_config_file_that_does_not_read_as_written_is_named_with_its_line(tiny_project):
    """Checked before Snakemake's configfile: reads it (whose own message names no file or line):
    a repeated option, which YAML resolves silently by keeping the last, and a syntax error."""
    config_path = tiny_project / "config" / "config.yaml"
    text = config_path.read_text()
    assert text.startswith("samples:") and "\nseed: 0\n" in text
    try:
        config_path.write_text(text.replace("\nseed: 0\n", "\nseed: 0\nseed: 7\n"))
        result = run_workflow(tiny_project, "-n", check=False)
        line = text[: text.index("\nseed: 0\n")].count("\n") + 3
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert f"config/config.yaml, line {line}: the option 'seed' is given twice" in output, output[-2000:]
        config_path.write_text(text.replace("\nseed: 0\n", "\nseed: [0\n"))
        result = run_workflow(tiny_project, "-n", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "config/config.yaml, line" in output
        assert "not valid YAML" in output, output[-2000:]
    finally:
        config_path.write_text(text)
    assert not (tiny_project / "results").exists()


def test_shipped_slurm_profile_is_refused_until_its_placeholders_are_replaced(tiny_project):
    """A dry run with profiles/slurm as shipped names the placeholder to replace (sbatch would
    otherwise refuse every job, on the cluster, one by one)."""
    profile = str(REPO / "profiles" / "slurm")
    result = run_workflow(tiny_project, "-n", extra=("--profile", profile), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "still holds the SLURM profile's placeholder YOUR_PARTITION" in output, output[-2000:]
    assert not (tiny_project / "results").exists()


def test_dry_run_says_what_it_checked(tiny_project):
    """A successful `snakemake -n` lists what the DAG-time checks looked at."""
    result = dry_run(tiny_project)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    summary = output[output.index("sccohort checked, before any job:") :]
    for text in (
        "config/config.yaml: every option against the schema",
        "2 in config/samples.tsv: conditions COVID19 1, Normal 1; 2 donors, 2 batches",
        "2 probed (2 10x_mtx)",
        "genes shared by all samples",
        "human_pbmc.tsv",
        "no contrast (de.contrasts is empty)",
    ):
        assert text in summary, summary[:2000]


def test_every_schema_property_has_description_and_default():
    for name in ("config.schema.yaml", "samples.schema.yaml"):
        schema = yaml.safe_load((REPO / "workflow" / "schemas" / name).read_text())
        stack = [("", schema)]
        while stack:
            where, node = stack.pop()
            for key, prop in node.get("properties", {}).items():
                assert "description" in prop, f"{name}: {where}{key} has no description"
                assert "default" in prop, f"{name}: {where}{key} has no default"
                stack.append((f"{where}{key}.", prop))
                if "items" in prop and isinstance(prop["items"], dict):
                    stack.append((f"{where}{key}[].", prop["items"]))


def test_sheet_path_that_is_a_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="is a folder: set 'samples:'"):
        read_sample_sheet(tmp_path)


def test_ids_that_cannot_be_folder_names_everywhere_are_refused(tmp_path):
    with pytest.raises(InputError, match="differ only in upper/lower case"):
        check(tmp_path, [("S1", "data/S1", "c", "d1"), ("s1", "data/s1", "c", "d2")])
    with pytest.raises(InputError, match="is 120 characters long; use at most 100"):
        check(tmp_path, [("S" * 120, "data/S1", "c", "d1")])
