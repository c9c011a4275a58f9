"""The report on unusual but legal runs: names pandas would read as missing (they stay names), and a
cohort whose integration was skipped (a one-sample pilot: the report says what was skipped and why)."""

from __future__ import annotations

import pandas as pd
from report.synthetic import write_synthetic
from sccohort.report.build import build_report
from sccohort.report.data import load, read_de_summary, read_de_table

CONDITIONS = ("NA", "NA", "None", "None")
CELL_TYPES = ("null", "$x^$ T", "Unknown")  # "$x^$": mathtext that matplotlib cannot parse


def test_names_like_na_none_null_survive_the_report(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, conditions=CONDITIONS, cell_types=CELL_TYPES)
    table = tmp_path / "results" / "de" / "stim_vs_ctrl" / "T.tsv"
    genes = pd.read_csv(table, sep="\t")
    genes.loc[0, "gene"] = "NA"
    genes.to_csv(table, sep="\t", index=False)

    data = load(inputs)
    assert set(data.umap["condition"]) == {"NA", "None"}
    assert set(data.umap_uncorrected["condition"]) == {"NA", "None"}
    assert set(data.composition["condition"]) == {"NA", "None"}
    assert set(data.clusters["label"]) == set(CELL_TYPES)
    assert set(data.composition["cell_type"]) == set(CELL_TYPES)
    assert data.umap["leiden_0.5"].map(type).eq(str).all()
    summary = read_de_summary(inputs.de_summary)
    assert "null" in set(summary["group"]) and summary["reason"].map(type).eq(str).all()
    de = read_de_table(table)
    assert de.loc[0, "gene"] == "NA" and de["padj"].isna().sum() == 1  # the one filtered gene

    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    assert "$x^$ T" in text and ">null<" in text


def test_skipped_integration_is_said_and_why(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    metrics = pd.read_csv(inputs.integration_metrics, sep="\t")
    metrics[metrics["graph"] == "uncorrected"].to_csv(inputs.integration_metrics, sep="\t", index=False)
    text = build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    why = "harmony was skipped: every batch key (cohort.batch_keys: sample) has a single level"
    assert text.count(why) == 2  # the integration section's note and the run summary's warnings
    assert "after harmony" not in text and "Differential expression was not run: no contrast" in text
