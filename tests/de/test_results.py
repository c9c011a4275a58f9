"""sccohort.de.results and the de_* rule scripts: the summary of every contrast, errors in the
rule logs, and the DE outputs of a whole-workflow run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import REPO
from sccohort.de import de_summary
from sccohort.de import pseudobulk as pb
from sccohort.de.composition import COMPOSITION_COLUMNS


def test_de_summary_stacks_the_contrasts_summaries_as_text(tmp_path):
    for name, groups in (("A_vs_B", ["T", "NK"]), ("C_vs_B", ["T"])):
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame(
            {"contrast": name, "group": groups, "status": "tested", "samples_test": "01,02", "reason": ""}
        ).to_csv(folder / "summary.tsv", sep="\t", index=False)
    output = tmp_path / "summary.tsv"
    de_summary(
        contrast_folders=[str(tmp_path / "A_vs_B"), str(tmp_path / "C_vs_B")],
        output=str(output),
        log=logging.getLogger("test_de"),
    )
    summary = pd.read_csv(output, sep="\t", dtype=str, keep_default_na=False)
    assert summary["contrast"].tolist() == ["A_vs_B", "A_vs_B", "C_vs_B"]
    assert summary["group"].tolist() == ["T", "NK", "T"]
    assert (summary["samples_test"] == "01,02").all() and (summary["reason"] == "").all()


# ---------------------------------------------------------------------------------------------
# The rule scripts go through run_rule: an InputError is the plain message in the rule's log
# ---------------------------------------------------------------------------------------------

# Runs a rule script the way Snakemake's `script:` does (a fresh process whose globals hold a
# `snakemake` object), with a stand-in for that object built from a JSON description.
RUN_SCRIPT = """
import json, runpy, sys

class Files(list):
    def __init__(self, items=(), named=None):
        named = named or {}
        super().__init__([*items, *named.values()])
        self.__dict__.update(named)

spec = json.loads(sys.argv[2])
smk = type("Snakemake", (), {})()
for part in ("input", "output", "params"):
    setattr(smk, part, Files(spec[part].get("items", ()), spec[part].get("named")))
smk.threads, smk.log, smk.rule = 1, [spec["log"]], spec["rule"]
runpy.run_path(sys.argv[1], init_globals={"snakemake": smk}, run_name="__main__")
"""


def run_rule_script(rule: str, tmp_path: Path, **spec) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "logs" / f"{rule}.log"
    spec = {"rule": rule, "log": str(log), "params": {}, **spec}
    result = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(REPO / "scripts" / f"{rule}.py"), json.dumps(spec)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
        capture_output=True,
        text=True,
    )
    return result, log.read_text()


def malformed_pseudobulk(tmp_path: Path) -> dict:
    """A metadata.tsv listing a pseudobulk sample (s2__T) that counts.tsv.gz lacks."""
    pd.DataFrame({"gene": ["g1", "g2"], "s1__T": [5, 7]}).to_csv(
        tmp_path / "counts.tsv.gz", sep="\t", index=False
    )
    pd.DataFrame(
        {
            "pseudobulk": ["s1__T", "s2__T"],
            "sample": ["s1", "s2"],
            "group": "T",
            "group_file": "T",
            "n_cells": 20,
            "condition": ["a", "b"],
        }
    ).to_csv(tmp_path / "metadata.tsv", sep="\t", index=False)
    return {"counts": str(tmp_path / "counts.tsv.gz"), "metadata": str(tmp_path / "metadata.tsv")}


def test_input_error_of_de_contrast_is_the_plain_message_in_its_log(tmp_path):
    contrast = {"name": "b_vs_a", "factor": "condition", "test": "b", "reference": "a"}
    result, log = run_rule_script(
        "de_contrast",
        tmp_path,
        input={"named": malformed_pseudobulk(tmp_path)},
        output={"items": [str(tmp_path / "b_vs_a")]},
        params={"named": {"contrast": contrast, "de": {"design": "~ condition"}}},
    )
    assert result.returncode == 1
    assert "lacks pseudobulk sample(s) s2__T listed in" in log
    assert "Traceback" not in log and "ERROR" in log
    # what the user sees on the terminal: the message, no traceback
    assert "lacks pseudobulk sample(s) s2__T" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b_vs_a").exists()


def test_input_error_of_de_pseudobulk_is_the_plain_message_in_its_log(tmp_path):
    """An integrated object without the raw counts layer: the message names the layer to keep."""
    adata = ad.AnnData(
        X=sp.csr_matrix(np.ones((4, 3), dtype=np.float32)),
        obs=pd.DataFrame({"sample": ["s1", "s1", "s2", "s2"], "cell_type": "T"}, index=list("abcd")),
    )
    adata.write_h5ad(tmp_path / "integrated.h5ad")
    result, log = run_rule_script(
        "de_pseudobulk",
        tmp_path,
        input={"named": {"h5ad": str(tmp_path / "integrated.h5ad")}},
        output={
            "named": {"counts": str(tmp_path / "counts.tsv.gz"), "metadata": str(tmp_path / "metadata.tsv")}
        },
        params={
            "named": {
                "group_by": "cell_type",
                "layer": "counts",
                "min_cells": 10,
                "covariates": [],
                "required": [],
            }
        },
    )
    assert result.returncode != 0
    assert "has no layer 'counts' with raw counts (layers: none)" in log
    assert "Traceback" not in log and "ERROR" in log
    assert not (tmp_path / "counts.tsv.gz").exists()


# ---------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_de_outputs_match_the_integrated_counts(full_run):
    """rule all on the small 4-sample project: pseudobulk sums equal the integrated object's raw
    counts per sample x cell type; every group x contrast is in summary.tsv, tested or skipped with
    a reason; each tested group has a table consistent with its summary row, and its figures."""
    results = full_run / "results"
    adata = ad.read_h5ad(results / "cohort" / "integrated.h5ad")
    counts, meta = pb.read_pseudobulk(
        results / "de" / "pseudobulk" / "counts.tsv.gz", results / "de" / "pseudobulk" / "metadata.tsv"
    )
    raw = sp.csr_matrix(adata.layers["counts"])
    for _, row in meta.sample(min(len(meta), 8), random_state=0).iterrows():
        cells = ((adata.obs["sample"] == row["sample"]) & (adata.obs["cell_type"] == row["group"])).to_numpy()
        assert cells.sum() == row["n_cells"]
        expected = np.asarray(raw[cells].sum(axis=0)).ravel()
        np.testing.assert_array_equal(counts.loc[row["pseudobulk"], adata.var_names].to_numpy(), expected)
    summary = pd.read_csv(results / "de" / "summary.tsv", sep="\t", keep_default_na=False)
    contrasts = summary["contrast"].unique()
    assert len(summary) == len(contrasts) * meta["group"].nunique()
    assert set(summary["status"]) <= {"tested", "skipped"}
    assert (summary.loc[summary["status"] == "skipped", "reason"] != "").all()
    assert (summary["status"] == "tested").any()
    for row in summary[summary["status"] == "tested"].itertuples():
        table = pd.read_csv(results / "de" / row.contrast / f"{row.group_file}.tsv", sep="\t")
        assert len(table) == row.genes_tested
        called = table["padj"] < float(yaml_alpha(full_run))
        assert (called & (table["log2FoldChange"] > 0)).sum() == row.up
        assert (called & (table["log2FoldChange"] < 0)).sum() == row.down
        for plot in ("volcano", "ma", "heatmap"):
            assert (
                results / "de" / row.contrast / "figures" / f"{row.group_file}.{plot}.png"
            ).stat().st_size > 0
    # The test that ran is recorded; the composition test of each contrast has its table and figure,
    # over every group of the pseudobulk metadata, and the report names the test.
    assert set(summary["method"]) == {"limma_voom"}
    for contrast in contrasts:
        composition = pd.read_csv(results / "composition" / f"{contrast}.tsv", sep="\t")
        assert list(composition.columns) == COMPOSITION_COLUMNS
        assert set(composition["group"]) == set(meta["group"])
        assert (results / "composition" / f"{contrast}.png").stat().st_size > 10_000
    assert "Test: limma-voom" in (results / "report.html").read_text()


def yaml_alpha(project: Path) -> float:
    import yaml

    return yaml.safe_load((project / "config" / "config.yaml").read_text())["de"]["alpha"]
