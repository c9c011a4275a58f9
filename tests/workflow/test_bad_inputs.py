"""Malformed projects are refused by name, early, with nothing half-written (issue 8).

Every case starts from one small valid project (4 real samples x 60 cells, 10x mtx folders),
breaks one thing, runs the real workflow (rule all) and asserts:

* a non-zero exit;
* a message that names the file, sample, column or value at fault, and says what to do;
* where the fault shows in headers, the sheet or the config: the DAG is refused, so a dry run
  (`snakemake -n`, what a real run does before its first job) fails and no job is planned;
* where the fault needs the data (duplicate barcodes, every cell failing QC): a real run
  (`snakemake --cores 2`, marked slow) fails in the job that reads it, the failing job's outputs
  are absent, nothing downstream was written, and no *.partial file is left.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import EXAMPLE, SMALL_SAMPLES, make_project, run_workflow

BAD = SMALL_SAMPLES[2]  # the sample a case breaks (Normal_PBMC_5)


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("bad_inputs_base"), n_cells=60)
    # the base project itself is valid: the DAG builds
    result = run_workflow(project, "-n", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return project


# ---------------------------------------------------------------------------- editing a project


def read_sheet(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "config" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)


def write_sheet(project: Path, sheet: pd.DataFrame) -> None:
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)


def edit_config(project: Path, edit: Callable[[dict], None]) -> None:
    path = project / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def set_path(project: Path, sample: str, path: str) -> None:
    sheet = read_sheet(project)
    sheet.loc[sheet["sample"] == sample, "path"] = path
    write_sheet(project, sheet)


def mtx(project: Path, sample: str = BAD) -> Path:
    return project / "data" / sample


def rewrite_matrix_values(folder: Path, transform: Callable[[np.ndarray], np.ndarray], field_: str) -> None:
    """Rewrite matrix.mtx.gz with transformed values (entries and their order unchanged)."""
    with gzip.open(folder / "matrix.mtx.gz", "rt") as handle:
        lines = handle.read().splitlines()
    header = [line for line in lines if line.startswith("%")]
    body = [line for line in lines if not line.startswith("%")]
    entries = np.array([line.split() for line in body[1:]], dtype=float)
    entries[:, 2] = transform(entries[:, 2])
    header[0] = f"%%MatrixMarket matrix coordinate {field_} general"
    text = [*header, body[0]] + [f"{int(i)} {int(j)} {v:g}" for i, j, v in entries]
    with gzip.open(folder / "matrix.mtx.gz", "wt") as handle:
        handle.write("\n".join(text) + "\n")


def rewrite_text(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(edit(lines)) + "\n")


def empty_matrix(project: Path) -> None:
    folder = mtx(project)
    with gzip.open(folder / "matrix.mtx.gz", "rt") as handle:
        header = [line for line in handle.read().splitlines() if line.startswith("%")][:1]
    n_genes = sum(1 for _ in gzip.open(folder / "features.tsv.gz", "rt"))
    with gzip.open(folder / "matrix.mtx.gz", "wt") as handle:
        handle.write("\n".join([*header, f"{n_genes} 0 0"]) + "\n")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.write("")


def normalised_h5ad(project: Path) -> None:
    """The sample as an .h5ad whose X is log-normalised and which keeps no raw counts."""
    import scanpy as sc
    from sccohort.qc.load import read_sample

    adata = read_sample(mtx(project))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.write_h5ad(project / "data" / f"{BAD}.h5ad")
    set_path(project, BAD, f"data/{BAD}.h5ad")


def truncated_h5(project: Path) -> None:
    data = (EXAMPLE / f"{BAD}.h5").read_bytes()
    (project / "data" / f"{BAD}.h5").write_bytes(data[: len(data) // 3])
    set_path(project, BAD, f"data/{BAD}.h5")


def corrupt_h5(project: Path) -> None:
    """A real HDF5 signature followed by garbage (a download that went wrong)."""
    data = bytearray((EXAMPLE / f"{BAD}.h5").read_bytes())
    rng = np.random.default_rng(0)
    data[8:4096] = rng.integers(0, 256, 4088, dtype=np.uint8).tobytes()
    (project / "data" / f"{BAD}.h5").write_bytes(bytes(data))
    set_path(project, BAD, f"data/{BAD}.h5")


def text_behind_h5(project: Path) -> None:
    (project / "data" / f"{BAD}.h5").write_text("barcode\tgene\tcount\nAAAC-1\tCD3E\t4\n")
    set_path(project, BAD, f"data/{BAD}.h5")


def other_species(project: Path) -> None:
    """One sample quantified against another reference: none of its gene ids is shared."""
    rewrite_text(
        mtx(project) / "features.tsv.gz",
        lambda lines: [
            "\t".join([f"ENSMUSG{i:011d}", f"Gm{i}", "Gene Expression"]) for i, _ in enumerate(lines)
        ],
    )


def all_cells_fail_qc(project: Path, samples=(BAD,)) -> None:
    sheet = read_sheet(project)
    sheet["min_genes"] = ""
    sheet.loc[sheet["sample"].isin(samples), "min_genes"] = "30000"  # no cell detects 30,000 genes
    write_sheet(project, sheet)


def drop_too_many(project: Path) -> None:
    all_cells_fail_qc(project, samples=SMALL_SAMPLES[:2])
    edit_config(project, lambda c: c["qc"].update(failed_sample_policy="drop", min_samples_kept=3))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def scramble_head(path: Path) -> None:
    """Bytes near the start of a gzip stream overwritten (a transfer error): zlib.error when read."""
    data = bytearray(path.read_bytes())
    data[200:264] = bytes(range(64))
    path.write_bytes(bytes(data))


def repeated_sheet_column(project: Path) -> None:
    """The sheet as a spreadsheet export with a second `condition` column (pandas: condition.1)."""
    sheet = read_sheet(project)
    lines = ["\t".join([*sheet.columns, "condition"])]
    lines += ["\t".join([*row, "other"]) for row in sheet.astype(str).itertuples(index=False)]
    (project / "config" / "samples.tsv").write_text("\n".join(lines) + "\n")


def latin1_sheet(project: Path) -> None:
    sheet = read_sheet(project)
    sheet.loc[2, "donor"] = "donor_f\xe9"
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False, encoding="latin-1")


def markers_matching_nothing(project: Path) -> None:
    (project / "markers.tsv").write_text("cell_type\tgene\nT cells\tFAKEGENE1\nB cells\tFAKEGENE2\n")
    edit_config(project, lambda c: c["annotation"].update(markers="markers.tsv"))


def sheet_edit(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda project: write_sheet(project, edit(read_sheet(project)))


def config_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda project: edit_config(project, edit)


def with_value(frame: pd.DataFrame, column: str, row: int, value: str) -> pd.DataFrame:
    frame.loc[row, column] = value
    return frame


# ---------------------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    breaks: Callable[[Path], None]
    says: list[str]  # substrings of the error: what is at fault and what to do
    at_dag: bool = True  # refused when the DAG is built (no job runs)
    failed_outputs: list[str] = field(default_factory=list)  # runtime cases: outputs that must not exist
    # runtime cases: what the run asks for (default rule all); the stage where the fault shows,
    # so the samples' pages and summaries that do not bear on it are not made first
    target: str | None = None


CASES = [
    Case("missing_input_file", lambda p: set_path(p, BAD, "data/nowhere.h5"),
         [BAD, "data/nowhere.h5", "does not exist", "fix the path"]),
    Case("truncated_h5", truncated_h5, [BAD, f"{BAD}.h5", "corrupt or truncated"]),
    Case("corrupt_h5", corrupt_h5, [BAD, f"{BAD}.h5", "corrupt or truncated"]),
    Case("wrong_format_behind_extension", text_behind_h5, [BAD, f"{BAD}.h5", "not an HDF5 file", "re-export"]),
    Case("empty_matrix", empty_matrix, [BAD, f"data/{BAD}", "empty matrix", "filtered Cell Ranger output"]),
    Case("non_integer_counts", lambda p: rewrite_matrix_values(mtx(p), lambda v: v * 0.37, "real"),
         [BAD, f"data/{BAD}", "non-integer values", "raw UMI counts"]),
    Case("negative_counts", lambda p: rewrite_matrix_values(mtx(p), lambda v: -v, "integer"),
         [BAD, f"data/{BAD}", "negative counts", "raw UMI counts"]),
    Case("h5ad_without_raw_counts", normalised_h5ad,
         [BAD, f"{BAD}.h5ad", "non-integer values in X", "counts_layer"]),
    Case("mtx_without_barcodes", lambda p: (mtx(p) / "barcodes.tsv.gz").unlink(),
         [BAD, f"data/{BAD}", "has no barcodes.tsv", "complete Cell Ranger output folder"]),
    Case("h5ad_layer_missing", lambda p: (normalised_h5ad(p), sheet_edit(
        lambda s: s.assign(counts_layer=np.where(s["sample"] == BAD, "spliced", "")))(p)),
         [BAD, "no layer 'spliced'", "counts_layer column"]),
    Case("duplicate_sample_ids", sheet_edit(lambda s: with_value(s, "sample", 3, s.loc[2, "sample"])),
         ["samples.tsv", BAD, "more than once"]),
    Case("illegal_sample_id", sheet_edit(lambda s: with_value(s, "sample", 2, "Normal PBMC/5")),
         ["samples.tsv", "'Normal PBMC/5'", "not allowed"]),
    Case("required_column_missing", sheet_edit(lambda s: s.drop(columns=["condition"])),
         ["samples.tsv", "condition"]),
    Case("design_unknown_column", config_edit(lambda c: c["de"].update(design="~ sex + condition")),
         ["de.design", "'sex'", "not a column of the sample sheet", "add the column or fix the formula"]),
    Case("contrast_unknown_level",
         config_edit(lambda c: c["de"]["contrasts"][0].update(reference="Healthy")),
         ["de.contrasts[0]", "'Healthy'", "condition"]),
    Case("condition_with_one_replicate", sheet_edit(lambda s: with_value(s, "condition", 3, "COVID19")),
         ["de", "Normal", "replicate"]),
    Case("disjoint_gene_sets", other_species,
         ["share only 0 genes", BAD, "same species and reference", "min_gene_overlap"]),
    Case("out_of_range_config_value", config_edit(lambda c: c["qc"].update(max_pct_mt=150)),
         ["max_pct_mt", "150"]),
    Case("unknown_config_option", config_edit(lambda c: c["qc"].update(min_gene=100)),
         ["qc.min_gene: unknown option (value 100); did you mean qc.min_genes?", "config/README.md"]),
    Case("markers_matching_no_gene", markers_matching_nothing,
         ["markers.tsv", "none of its 2 genes is in the data", "fix or replace the table"]),
    Case("marker_type_with_slash", lambda p: (
        (p / "markers.tsv").write_text("cell_type\tgene\nCD4/CD8 T\tCD3E\nB\tMS4A1\n"),
        edit_config(p, lambda c: c["annotation"].update(markers="markers.tsv"))),
         ["markers.tsv", "CD4/CD8 T", "rename"]),
    Case("sample_sheet_missing", config_edit(lambda c: c.update(samples="config/sheet.tsv")),
         ["config/sheet.tsv"]),
    # issue 19: faults that were accepted silently or failed hours later, named at DAG time now
    Case("results_folder_empty", config_edit(lambda c: c.update(results="")),
         ["config: results is empty", "set it to a folder"]),
    Case("invalid_hb_pattern", config_edit(lambda c: c["qc"].update(hb_pattern="^HB[AB")),
         ["qc.hb_pattern '^HB[AB'", "not a valid regular expression", "fix it"]),
    Case("empty_mt_prefix", config_edit(lambda c: c["qc"].update(mt_prefix="")),
         ["qc.mt_prefix is empty", "Use auto"]),
    Case("mt_prefix_matching_no_gene", config_edit(lambda c: c["qc"].update(mt_prefix="MT_")),
         ["qc.mt_prefix 'MT_' starts no gene", "MT-CO1", "use auto"]),
    Case("de_group_by_no_obs_column", config_edit(lambda c: c["de"].update(group_by="celltype")),
         ["de.group_by 'celltype'", "not a column the annotated cohort will have", "cell_type, cell_type_lineage, leiden_0.25"]),
    Case("blank_design_covariate", lambda p: (
        sheet_edit(lambda s: s.assign(site=["a", "a", "", "b"]))(p),
        edit_config(p, lambda c: c["de"].update(design="~ site + condition"))),
         ["samples.tsv", BAD, "column 'site': empty", "de.design '~ site + condition'", "Fill it in"]),
    Case("na_design_covariate", sheet_edit(lambda s: with_value(s, "condition", 2, "NA")),
         [BAD, "column 'condition': 'NA', a missing value", "de.design", "give it another name"]),
    Case("repeated_sheet_column", repeated_sheet_column,
         ["samples.tsv", "'condition' more than once", "keep one"]),
    Case("sheet_not_utf8", latin1_sheet, ["samples.tsv", "is not UTF-8 text", "save it as UTF-8"]),
    Case("two_samples_one_input", lambda p: set_path(p, BAD, f"data/{SMALL_SAMPLES[3]}"),
         ["samples.tsv", "lines 4 and 5", BAD, SMALL_SAMPLES[3], "read the same input"]),
    Case("truncated_features_gz", lambda p: truncate(mtx(p) / "features.tsv.gz", 0.5),
         [BAD, f"data/{BAD}", "features.tsv.gz could not be read", "EOFError", "Copy or export it again"]),
    Case("corrupt_matrix_gz", lambda p: scramble_head(mtx(p) / "matrix.mtx.gz"),
         [BAD, f"data/{BAD}", "matrix.mtx.gz could not be read", "corrupt", "Copy or export it again"]),
    # faults that only the data shows: caught by the first job that reads it
    Case("duplicate_barcodes", lambda p: rewrite_text(
        mtx(p) / "barcodes.tsv.gz", lambda lines: [lines[0], lines[0], *lines[2:]]),
         [BAD, f"data/{BAD}", "duplicate barcodes", "once per sample"], at_dag=False,
         failed_outputs=[f"results/qc/{BAD}/raw.h5ad", f"results/qc/{BAD}/filtered.h5ad"]),
    Case("matrix_gz_truncated_past_the_head", lambda p: truncate(mtx(p) / "matrix.mtx.gz", 0.9),
         [BAD, f"data/{BAD}", "matrix.mtx.gz could not be read", "Copy or export it again"], at_dag=False,
         failed_outputs=[f"results/qc/{BAD}/raw.h5ad", f"results/qc/{BAD}/filtered.h5ad"]),
    Case("every_cell_fails_qc", all_cells_fail_qc,
         [BAD, "min_cells_after_qc", "failed_sample_policy"], at_dag=False,
         failed_outputs=[f"results/qc/{BAD}/filtered.h5ad", f"results/qc/{BAD}/thresholds.json"],
         target=f"results/qc/{BAD}/thresholds.json"),
    Case("too_few_samples_left_after_drop", drop_too_many,
         ["QC dropped 2 of 4 samples", SMALL_SAMPLES[0], SMALL_SAMPLES[1], "min_samples_kept is 3"],
         at_dag=False, failed_outputs=["results/cohort/pca.h5ad", "results/cohort/merge_summary.tsv"],
         target="results/cohort/pca.h5ad"),
]  # fmt: skip


def test_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


# Faults refused when the DAG is built are tested with a dry run (seconds); the others need real
# jobs and are end-to-end runs (slow).
PARAMS = [pytest.param(c, id=c.id, marks=() if c.at_dag else pytest.mark.slow) for c in CASES]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", PARAMS)
def test_malformed_project_is_refused_by_name(case, base_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(base_project, project, ignore=shutil.ignore_patterns(".snakemake"))
    case.breaks(project)

    result = run_workflow(project, *(["-n"] if case.at_dag else [case.target or "all"]), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case.id}: the run succeeded:\n{output[-3000:]}"
    missing = [text for text in case.says if text not in output]
    assert not missing, f"{case.id}: the error does not say {missing}:\n{output[-4000:]}"

    partial = [p for p in project.rglob("*.partial") if ".snakemake" not in p.parts]
    assert not partial, f"{case.id}: half-written files left: {partial}"
    if case.at_dag:
        # refused when the DAG was built: no job started, nothing written
        assert "Job stats" not in output, f"{case.id}: jobs were scheduled:\n{output[-3000:]}"
        assert not files_under(project / "results"), files_under(project / "results")
        assert not files_under(project / "logs"), files_under(project / "logs")
    else:
        for name in case.failed_outputs:
            assert not (project / name).exists(), f"{case.id}: {name} exists after the failure"
        downstream = [
            p for p in files_under(project / "results") if p.relative_to(project / "results").parts[0] != "qc"
        ]
        if "results/cohort/pca.h5ad" not in case.failed_outputs:
            assert not downstream, f"{case.id}: later stages wrote {downstream}"
        # what a failing job's log says is what the user reads first
        logs = "".join(p.read_text(errors="replace") for p in files_under(project / "logs"))
        assert case.says[-1] in logs or case.says[-1] in output


def test_qc_needs_no_marker_match_rule_all_does(base_project, tmp_path):
    """Genes named by Ensembl ids only: the marker table (symbols) matches none. `snakemake qc`
    needs no annotation, so its DAG builds; rule all's DAG is refused naming the table (the match
    is checked when annotate_cells is in the DAG)."""
    project = tmp_path / "project"
    shutil.copytree(base_project, project, ignore=shutil.ignore_patterns(".snakemake"))
    for sample in SMALL_SAMPLES:
        rewrite_text(
            mtx(project, sample) / "features.tsv.gz",
            lambda lines: ["\t".join([f.split("\t")[0], f.split("\t")[0], "Gene Expression"]) for f in lines],
        )
    qc = run_workflow(project, "-n", "qc", check=False)
    assert qc.returncode == 0, (qc.stdout + qc.stderr)[-3000:]
    everything = run_workflow(project, "-n", check=False)
    output = everything.stdout + everything.stderr
    assert everything.returncode != 0 and "Job stats" not in output
    assert "human_pbmc.tsv: none of its" in output and "fix or replace the table" in output, output[-3000:]
