"""The aggregated report (results/report.html), MultiQC custom content and `snakemake --report`.

Unit tests build the report from small synthetic stage outputs whose numbers are known; the
workflow tests read the shared `full_run` project; browser tests open the page from file:// in
Debian's headless Chromium, driven over the DevTools protocol on --remote-debugging-pipe (NUL-
separated JSON on file descriptors 3 and 4, stdlib only), and check console errors, network
requests, the rendered DOM and a screenshot.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import REPO, make_project, run_workflow
from sccohort import html, multiqc, report
from sccohort.errors import InputError

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)

HOSTILE_CONDITION = "<script>window.__pwned=1</script>"
HOSTILE_TYPE = "<img src=x onerror=window.__pwned2=1>NK"
HOSTILE_TYPE_2 = "<svg onload=window.__pwned3=1>B"
HOSTILE_GENE = "<b>GENE7</b>"
SECTIONS = ("summary", "qc", "integration", "clustering", "de")


# ---------------------------------------------------------------------------------------------
# Synthetic stage outputs with known numbers
# ---------------------------------------------------------------------------------------------
def _bh(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1)
    return out


def write_synthetic(
    root: Path,
    conditions=("ctrl", "ctrl", "stim", "stim"),
    cell_types=("T", "B", "Unknown"),
    n_cells: int = 400,
    with_de: bool = True,
    seed: int = 0,
) -> tuple[report.ReportInputs, dict, pd.DataFrame]:
    """Stage outputs of 4 samples (S3: doublet calling skipped), 3 clusters, one contrast."""
    rng = np.random.default_rng(seed)
    results = root / "results"
    samples = [f"S{i + 1}" for i in range(len(conditions))]
    sheet = pd.DataFrame(
        {
            "sample": samples,
            "path": [f"data/{s}.h5" for s in samples],
            "condition": list(conditions),
            "donor": [f"d{i}" for i in range(len(samples))],
        }
    ).set_index("sample", drop=False)
    thresholds, cells, qc_pages, umap_rows = {}, {}, {}, []
    for i, sample in enumerate(samples):
        folder = results / "qc" / sample
        folder.mkdir(parents=True)
        counts = np.round(np.exp(rng.normal(8, 1, n_cells)))
        genes = np.round(counts * rng.uniform(0.2, 0.5, n_cells))
        pct_mt = rng.uniform(0, 30, n_cells)
        skipped = sample == "S3"
        score = np.full(n_cells, np.nan) if skipped else rng.beta(2, 8, n_cells)
        low_counts, low_genes, high_mt = counts < 1000, genes < 300, pct_mt > 20
        qc_pass = ~(low_counts | low_genes | high_mt)
        doublet = qc_pass & (np.nan_to_num(score) > 0.45)
        keep = qc_pass & ~doublet
        reasons = [
            ";".join(r for r, f in zip(REASONS, flags, strict=True) if f)
            for flags in zip(low_counts, low_genes, high_mt, doublet, strict=True)
        ]
        frame = pd.DataFrame(
            {
                "barcode": [f"BC{j}" for j in range(n_cells)],
                "sample": sample,
                "total_counts": counts,
                "n_genes_by_counts": genes,
                "pct_counts_mt": pct_mt,
                "doublet_score": score,
                "predicted_doublet": doublet,
                "qc_pass": qc_pass,
                "pass": keep,
                "fail_reason": reasons,
            }
        )
        frame.to_csv(folder / "cells.tsv.gz", sep="\t", index=False)
        info = {
            "sample": sample,
            "qc": {
                "total_counts": {"lower": 1000.0, "upper": None},
                "n_genes_by_counts": {"lower": 300.0, "upper": None},
                "pct_counts_mt": {"lower": None, "upper": 20.0},
            },
            "doublets": (
                {"skipped": "only 150 cells pass QC (< doublets.min_cells 200)", "expected_rate": None}
                if skipped
                else {"threshold": 0.45, "expected_rate": 0.01}
            ),
            "status": {
                "sample": sample,
                "n_cells_input": n_cells,
                "n_cells_after_qc": int(qc_pass.sum()),
                "n_doublets": int(doublet.sum()),
                "n_cells_kept": int(keep.sum()),
                "removed_by_reason": {},
                "dropped": False,
            },
            "notes": [],
            "mt_prefix": "MT-",
        }
        info["status"]["removed_by_reason"] = {
            name: int(flags.sum())
            for name, flags in zip(REASONS, (low_counts, low_genes, high_mt, doublet), strict=True)
            if flags.sum()
        }
        (folder / "thresholds.json").write_text(json.dumps(info))
        (folder / "report.html").write_text("<!DOCTYPE html><title>qc page</title>")
        thresholds[sample], cells[sample], qc_pages[sample] = (
            folder / "thresholds.json",
            folder / "cells.tsv.gz",
            folder / "report.html",
        )
        n_kept = int(keep.sum())
        cluster = rng.integers(0, len(cell_types), n_kept)
        centres = np.array([[0, 0], [8, 0], [4, 7]])[cluster]
        xy = centres + rng.normal(0, 1, (n_kept, 2))
        umap_rows.append(
            pd.DataFrame(
                {
                    "barcode": [f"{sample}_BC{j}" for j in np.flatnonzero(keep)],
                    "UMAP1": xy[:, 0],
                    "UMAP2": xy[:, 1],
                    "sample": sample,
                    "condition": conditions[i],
                    "leiden_0.5": cluster,
                    "leiden_1.0": cluster,
                    "_shift": i * 3.0,
                }
            )
        )
    umap = pd.concat(umap_rows, ignore_index=True)
    cohort, annotation = results / "cohort", results / "annotation"
    (cohort / "figures").mkdir(parents=True)
    (annotation / "figures").mkdir(parents=True)
    before = umap.assign(UMAP1=umap["UMAP1"] + umap["_shift"]).drop(columns="_shift")
    umap = umap.drop(columns="_shift")
    umap.to_csv(cohort / "umap_coords.tsv.gz", sep="\t", index=False)
    before.to_csv(cohort / "umap_pca_coords.tsv.gz", sep="\t", index=False)
    metrics = []
    for graph, mixing in (("uncorrected", 0.1), ("harmony", 0.6)):
        for cluster in [*map(str, range(len(cell_types))), "all"]:
            metrics.append(
                {
                    "graph": graph,
                    "cluster": cluster,
                    "n_cells": 100,
                    "batch_key": "sample",
                    "n_batches": 4,
                    "batch_mixing": mixing,
                    "batch_mixing_expected": 0.7,
                    "batch_mixing_ratio": mixing / 0.7,
                    "cluster_purity": 0.9,
                }
            )
    pd.DataFrame(metrics).to_csv(cohort / "integration_metrics.tsv", sep="\t", index=False)
    clusters = pd.DataFrame(
        {
            "cluster": [str(c) for c in range(len(cell_types))],
            "label": list(cell_types),
            "best_type": [t if t != "Unknown" else "NK" for t in cell_types],
            "score": 0.8,
            "margin": 0.3,
            "n_cells": np.bincount(umap["leiden_0.5"], minlength=len(cell_types)),
            "reason": "assigned",
        }
    )
    clusters.to_csv(annotation / "cluster_annotation.tsv", sep="\t", index=False)
    obs = umap.assign(
        cell_type=umap["leiden_0.5"]
        .astype(str)
        .map(dict(zip(clusters["cluster"], clusters["label"], strict=True)))
    )
    composition = obs.groupby(["sample", "condition", "cell_type"]).size().rename("n_cells").reset_index()
    composition["fraction"] = composition["n_cells"] / composition.groupby("sample")["n_cells"].transform(
        "sum"
    )
    composition.to_csv(annotation / "composition.tsv", sep="\t", index=False)
    inputs = report.ReportInputs(
        thresholds={s: str(p) for s, p in thresholds.items()},
        cells={s: str(p) for s, p in cells.items()},
        qc_pages={s: str(p) for s, p in qc_pages.items()},
        umap=str(cohort / "umap_coords.tsv.gz"),
        umap_uncorrected=str(cohort / "umap_pca_coords.tsv.gz"),
        integration_metrics=str(cohort / "integration_metrics.tsv"),
        cluster_annotation=str(annotation / "cluster_annotation.tsv"),
        composition=str(annotation / "composition.tsv"),
    )
    config = {
        "seed": 0,
        "results": "results",
        "cohort": {"default_resolution": 0.5, "integration": "harmony"},
        "annotation": {"resolution": None},
        "report": {"title": "synthetic report", "max_points": 50000, "top_genes": 25},
        "de": {"contrasts": [], "alpha": 0.05, "design": "~ condition", "group_by": "cell_type"},
    }
    if with_de:
        contrast = {
            "name": "stim_vs_ctrl",
            "factor": "condition",
            "test": conditions[-1],
            "reference": conditions[0],
        }
        config["de"]["contrasts"] = [contrast]
        folder = results / "de" / "stim_vs_ctrl"
        folder.mkdir(parents=True)
        rows = []
        for group, group_file in ((cell_types[0], "T"), (cell_types[1], "group_2")):
            pvalue = rng.uniform(0, 1, 300) ** 3
            pvalue[:10] = 10.0 ** -rng.uniform(5, 12, 10)
            table = pd.DataFrame(
                {
                    "gene": [HOSTILE_GENE if j == 7 else f"GENE{j}" for j in range(300)],
                    "baseMean": rng.uniform(1, 500, 300),
                    "log2FoldChange": rng.normal(0, 1.5, 300),
                    "lfcSE": 0.3,
                    "stat": rng.normal(0, 2, 300),
                    "pvalue": pvalue,
                }
            )
            table["padj"] = _bh(pvalue)
            table.loc[299, ["pvalue", "padj"]] = np.nan  # independent filtering
            table.to_csv(folder / f"{group_file}.tsv", sep="\t", index=False)
            called = table["padj"] < 0.05
            rows.append(
                {
                    "contrast": "stim_vs_ctrl",
                    "group": group,
                    "group_file": group_file,
                    "status": "tested",
                    "genes_tested": 300,
                    "up": int((called & (table["log2FoldChange"] > 0)).sum()),
                    "down": int((called & (table["log2FoldChange"] < 0)).sum()),
                    "reason": "",
                }
            )
        rows.append(
            {
                "contrast": "stim_vs_ctrl",
                "group": "Unknown",
                "group_file": "Unknown",
                "status": "skipped",
                "genes_tested": 0,
                "up": 0,
                "down": 0,
                "reason": "excluded by de.exclude_groups",
            }
        )
        pd.DataFrame(rows).to_csv(results / "de" / "summary.tsv", sep="\t", index=False)
        inputs.de_summary = str(results / "de" / "summary.tsv")
        inputs.de_dirs = {"stim_vs_ctrl": str(folder)}
    return inputs, config, sheet


REASONS = ("low_counts", "low_genes", "high_pct_mt", "doublet")


class Page(HTMLParser):
    """Every tag with its attributes, the text of each table by id, and the scripts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._row = None
        self._cell = None
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        elif tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        elif self._cell is not None:
            self._cell += data

    def frame(self, table_id: str) -> pd.DataFrame:
        rows = self.tables[table_id]
        return pd.DataFrame(rows[1:], columns=rows[0])


def _number(text: str) -> float:
    return float(text.replace(",", "")) if text.strip() else float("nan")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_report")
    inputs, config, sheet = write_synthetic(
        root,
        conditions=("ctrl", "ctrl", HOSTILE_CONDITION, HOSTILE_CONDITION),
        cell_types=("T", HOSTILE_TYPE, "Unknown"),
    )
    text = report.build_report(
        inputs,
        config,
        sheet=sheet,
        versions={"scanpy": "1.11.5", "<evil>": "1"},
        checksum_paths={"sample sheet": inputs.thresholds["S1"]},
        report_path=root / "results" / "report.html",
    )
    (root / "results" / "report.html").write_text(text)
    return root, inputs, config, sheet, text


# ---------------------------------------------------------------------------------------------
# Unit tests
# ---------------------------------------------------------------------------------------------
def test_sample_summary_numbers_come_from_the_cells(synthetic):
    _, inputs, _, _, _ = synthetic
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        info = json.loads(Path(inputs.thresholds[sample]).read_text())
        row = report.sample_qc_summary(info, report.read_cells(path))
        kept = cells[cells["pass"]]
        assert row["cells_in"] == len(cells)
        assert row["cells_after_qc"] == int(cells["qc_pass"].sum())
        assert row["cells_kept"] == len(kept)
        assert row["median_genes"] == pytest.approx(kept["n_genes_by_counts"].median())
        assert row["median_pct_mt"] == pytest.approx(kept["pct_counts_mt"].median())
        assert row["removed_low_counts"] == int((cells["total_counts"] < 1000).sum())
        if sample == "S3":  # doublet calling skipped: no rate, a note
            assert np.isnan(row["doublet_rate_pct"]) and row["doublets_skipped"]
        else:
            expected = 100 * cells["predicted_doublet"].sum() / cells["qc_pass"].sum()
            assert row["doublet_rate_pct"] == pytest.approx(expected)
            assert row["doublets"] > 0


def test_cells_per_step_adds_up(synthetic):
    _, inputs, _, sheet, _ = synthetic
    data = report.load(inputs)
    final = report.final_cells_per_sample(data.composition, data.umap)
    steps = report.cells_per_step(data.qc, final, sheet)
    body, total = steps.iloc[:-1], steps.iloc[-1]
    assert total["sample"] == "total"
    for column in ("cells in", "after QC thresholds", "after doublet removal", "in final object"):
        assert total[column] == body[column].sum()
    # every kept cell is in the (synthetic) final object; QC only removes
    assert (body["in final object"] == body["after doublet removal"]).all()
    assert (body["after QC thresholds"] <= body["cells in"]).all()
    assert total["in final object"] == len(data.umap)


def test_top_de_genes_orders_by_adjusted_pvalue_missing_last():
    table = pd.DataFrame(
        {
            "gene": list("abcdef"),
            "log2FoldChange": [1, -3, 2, 0.5, 4, 1],
            "pvalue": [0.01, 0.001, 0.001, np.nan, 0.2, 0.0001],
            "padj": [0.02, 0.004, 0.004, np.nan, 0.3, 0.001],
        }
    )
    top = report.top_de_genes(table, 4)
    # f (smallest padj), then b/c tied on padj and pvalue: larger |log2FC| first, then a
    assert list(top["gene"]) == ["f", "b", "c", "a"]
    assert list(report.top_de_genes(table, 10)["gene"])[-1] == "d"


def test_subsample_is_seeded_and_bounded():
    frame = pd.DataFrame({"x": np.arange(5000)})
    a, b = report.subsample(frame, 1000, seed=3), report.subsample(frame, 1000, seed=3)
    c = report.subsample(frame, 1000, seed=4)
    assert len(a) == 1000 and a["x"].is_unique
    assert a["x"].tolist() == b["x"].tolist()
    assert a["x"].tolist() != c["x"].tolist()
    small = report.subsample(frame.head(10), 1000, seed=3)
    assert sorted(small["x"]) == list(range(10))


def test_checksums_of_files_and_mtx_directories(tmp_path):
    single = tmp_path / "a.h5"
    single.write_bytes(b"abc" * 1000)
    folder = tmp_path / "mtx"
    folder.mkdir()
    for name in ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz"):
        (folder / name).write_bytes(name.encode() * 7)
    table = report.checksums({"one": single, "dir": folder, "gone": tmp_path / "missing.h5"}, chunk=100)
    assert table.loc[table["input"] == "one", "sha256"].item() == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert table.loc[table["input"] == "one", "md5"].item() == hashlib.md5(b"abc" * 1000).hexdigest()
    inside = table[table["input"] == "dir"]
    assert sorted(Path(f).name for f in inside["file"]) == [
        "barcodes.tsv.gz",
        "features.tsv.gz",
        "matrix.mtx.gz",
    ]
    for _, row in inside.iterrows():
        assert row["md5"] == hashlib.md5(Path(row["file"]).read_bytes()).hexdigest()
    assert table.loc[table["input"] == "gone", "md5"].item() == "not found"


def test_report_is_self_contained_and_escapes_user_strings(synthetic):
    root, inputs, _, _, text = synthetic
    page = Page(text)
    # One script (the table script, which holds no data), no external resource of any kind.
    assert page.scripts == [html.TABLE_SCRIPT]
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        if tag in ("link", "iframe", "object", "embed", "base"):
            raise AssertionError(f"unexpected <{tag}>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text, re.I)
    assert "url(" not in text and "@import" not in text
    # Hostile names appear, escaped, where they belong.
    for hostile in (HOSTILE_CONDITION, HOSTILE_TYPE, HOSTILE_GENE, "<evil>"):
        assert hostile not in text
        assert html.escape(hostile) in text
    assert "stim_vs_ctrl" in text
    # Sections and navigation.
    ids = {attrs.get("id") for tag, attrs in page.tags if tag == "section"}
    assert ids == set(SECTIONS)
    nav = [attrs["href"] for tag, attrs in page.tags if tag == "a" and attrs.get("href", "").startswith("#")]
    assert nav[: len(SECTIONS)] == [f"#{s}" for s in SECTIONS]
    # Links to the per-sample QC pages are relative to the report and resolve.
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a" and "qc/" in attrs.get("href", "")]
    assert links == [f"qc/{s}/report.html" for s in inputs.thresholds]
    for link in links:
        assert (root / "results" / link).is_file()


def test_report_tables_hold_the_inputs_numbers(synthetic):
    _, inputs, config, _, text = synthetic
    page = Page(text)
    steps = page.frame("cells-per-step").set_index("sample")
    qc = page.frame("qc-table").set_index("sample")
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        assert _number(steps.loc[sample, "cells in"]) == len(cells)
        assert _number(steps.loc[sample, "after doublet removal"]) == cells["pass"].sum()
        assert _number(qc.loc[sample, "high % mito"]) == (cells["pct_counts_mt"] > 20).sum()
        assert _number(qc.loc[sample, "median genes"]) == round(
            cells.loc[cells["pass"], "n_genes_by_counts"].median()
        )
    assert qc.loc["S1", "condition"] == "ctrl" and qc.loc["S3", "condition"] == HOSTILE_CONDITION
    # DE: one searchable table per tested group with the top_genes genes by adjusted p-value.
    de_tables = [t for t in page.tables if t.startswith("de-stim_vs_ctrl-")]
    assert len(de_tables) == 2
    for table_id, group_file in zip(sorted(de_tables), ("T", "group_2"), strict=True):
        shown = page.frame(table_id)
        full = pd.read_csv(Path(inputs.de_dirs["stim_vs_ctrl"]) / f"{group_file}.tsv", sep="\t")
        assert len(shown) == config["report"]["top_genes"]
        padj = full.set_index("gene")["padj"]
        shown_padj = padj[shown["gene"]].to_numpy()
        assert (np.diff(shown_padj) >= 0).all()  # sorted by adjusted p-value
        assert shown_padj.max() <= padj.drop(shown["gene"]).min()  # and no better gene left out
    summary = page.frame("de-summary")
    assert set(summary["status"]) == {"tested", "skipped"}
    assert "DE stim_vs_ctrl / Unknown: skipped: excluded by de.exclude_groups" in text


def test_report_degrades_without_optional_inputs_and_warns(tmp_path):
    """No DE, no method agreement, no stage figures, a dropped sample, a sample without doublet
    calling: the report is still whole and says so."""
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    info = json.loads(Path(inputs.thresholds["S2"]).read_text())
    info["status"]["dropped"] = True
    info["status"]["warning"] = "Sample 'S2': only 12 of 400 cells pass QC; dropped from the cohort."
    Path(inputs.thresholds["S2"]).write_text(json.dumps(info))
    text = report.build_report(inputs, config, sheet=sheet, report_path=tmp_path / "results" / "report.html")
    page = Page(text)
    assert {attrs.get("id") for tag, attrs in page.tags if tag == "section"} == set(SECTIONS)
    assert "Differential expression was not run: no contrast is configured" in text
    assert "Only the marker-based annotation ran" in text
    assert "Dot plot by cell type not available." in text
    assert "only 12 of 400 cells pass QC; dropped from the cohort." in text
    assert "Sample S3: doublet calling skipped: only 150 cells pass QC" in text
    status = page.frame("cells-per-step").set_index("sample")["status"]
    assert status["S2"].startswith("dropped") and status["S3"] == "doublet calling skipped"
    assert status["S1"] == "ok"


def test_missing_required_input_fails_naming_it(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False)
    Path(inputs.integration_metrics).unlink()
    with pytest.raises(InputError, match="integration_metrics.*integration_metrics.tsv"):
        report.build_report(inputs, config, sheet=sheet)


def test_big_cohorts_are_subsampled_to_max_points(tmp_path):
    inputs, config, sheet = write_synthetic(tmp_path, with_de=False, n_cells=1500)
    n_cells = len(pd.read_csv(inputs.umap, sep="\t"))
    config["report"]["max_points"] = 1000
    text = report.build_report(inputs, config, sheet=sheet)
    assert f"Drawn on a random subsample of 1,000 of {n_cells:,} cells (seed 0)" in text


def test_small_cohorts_are_drawn_whole(synthetic):
    _, inputs, config, _, text = synthetic
    assert len(pd.read_csv(inputs.umap, sep="\t")) < config["report"]["max_points"]
    assert "Drawn on a random subsample" not in text


def _mqc_header(text: str) -> dict:
    header = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# "))
    return yaml.safe_load(header)


def _mqc_table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep="\t", comment="#", index_col=0)


def test_multiqc_custom_content(synthetic, tmp_path):
    _, inputs, _, _, _ = synthetic
    data = report.load(inputs)
    files = multiqc.custom_content(data.qc)
    assert set(files) == {"sccohort_general_stats_mqc.tsv", "sccohort_qc_mqc.tsv", "sccohort_cells_mqc.tsv"}
    headers = {name: _mqc_header(text) for name, text in files.items()}
    assert headers["sccohort_general_stats_mqc.tsv"]["plot_type"] == "generalstats"
    assert headers["sccohort_qc_mqc.tsv"]["plot_type"] == "table"
    assert headers["sccohort_cells_mqc.tsv"]["plot_type"] == "bargraph"
    assert len({h["id"] for h in headers.values()}) == 3
    general = _mqc_table(files["sccohort_general_stats_mqc.tsv"])
    assert list(general.columns) == [
        "cells_in",
        "cells_kept",
        "median_genes",
        "median_pct_mt",
        "doublet_rate_pct",
    ]
    for sample, path in inputs.cells.items():
        cells = pd.read_csv(path, sep="\t")
        assert general.loc[sample, "cells_in"] == len(cells)
        assert general.loc[sample, "cells_kept"] == cells["pass"].sum()
        assert general.loc[sample, "median_genes"] == pytest.approx(
            cells.loc[cells["pass"], "n_genes_by_counts"].median()
        )
    assert np.isnan(general.loc["S3", "doublet_rate_pct"])  # skipped: left empty
    bars = _mqc_table(files["sccohort_cells_mqc.tsv"])
    assert (bars.sum(axis=1) == general["cells_in"]).all()  # exclusive categories


def test_multiqc_reads_the_custom_content_offline(synthetic, tmp_path):
    _, inputs, _, _, _ = synthetic
    data = report.load(inputs)
    paths = {name: tmp_path / name for name in multiqc.custom_content(data.qc)}
    multiqc.write_custom_content(data.qc, paths)
    command = multiqc.multiqc_command(paths.values(), tmp_path / "out", "multiqc_report.html")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    general = pd.read_csv(
        tmp_path / "out" / "multiqc_report_data" / "multiqc_general_stats.txt", sep="\t", index_col=0
    )
    kept = general.filter(like="cells_kept").iloc[:, 0]
    assert kept.to_dict() == data.qc.set_index("sample")["cells_kept"].to_dict()
    assert (tmp_path / "out" / "multiqc_report.html").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# The real workflow (shared full_run project)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_report(full_run):
    path = full_run / "results" / "report.html"
    assert path.is_file(), "rule all did not write results/report.html"
    return full_run, path.read_text()


def test_workflow_report_matches_the_stage_outputs(full_report):
    project, text = full_report
    page = Page(text)
    assert page.scripts == [html.TABLE_SCRIPT]
    assert {attrs.get("id") for tag, attrs in page.tags if tag == "section"} == set(SECTIONS)
    steps = page.frame("cells-per-step").set_index("sample")
    umap = pd.read_csv(project / "results" / "cohort" / "umap_coords.tsv.gz", sep="\t")
    sheet = pd.read_csv(project / "config" / "samples.tsv", sep="\t")
    for sample in sheet["sample"]:
        info = json.loads((project / "results" / "qc" / sample / "thresholds.json").read_text())
        assert _number(steps.loc[sample, "cells in"]) == info["status"]["n_cells_input"]
        assert _number(steps.loc[sample, "after QC thresholds"]) == info["status"]["n_cells_after_qc"]
        assert _number(steps.loc[sample, "after doublet removal"]) == info["status"]["n_cells_kept"]
        assert _number(steps.loc[sample, "in final object"]) == (umap["sample"] == sample).sum()
        assert f'href="qc/{sample}/report.html"' in text
    assert _number(steps.loc["total", "in final object"]) == len(umap)
    # every tested DE group has its volcano and top-gene table
    summary = pd.read_csv(project / "results" / "de" / "summary.tsv", sep="\t")
    tested = summary[summary["status"] == "tested"]
    assert len(tested) > 0
    assert len([t for t in page.tables if t.startswith("de-")]) == len(tested) + 1  # + the summary table
    assert text.count('alt="volcano plot') == len(tested)
    for tag, attrs in page.tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    assert len(text.encode()) < 15e6


def test_workflow_writes_multiqc_content(full_run):
    folder = full_run / "results" / "multiqc"
    general = _mqc_table((folder / "sccohort_general_stats_mqc.tsv").read_text())
    for sample in general.index:
        info = json.loads((full_run / "results" / "qc" / sample / "thresholds.json").read_text())
        assert general.loc[sample, "cells_in"] == info["status"]["n_cells_input"]
        assert general.loc[sample, "cells_kept"] == info["status"]["n_cells_kept"]


def test_snakemake_report_zip_and_html(full_run):
    for name in ("snakemake_report.zip", "snakemake_report.html"):
        target = full_run / "results" / name
        run_workflow(full_run, extra=["--report", str(target)])
        assert target.is_file() and target.stat().st_size > 10_000
    with zipfile.ZipFile(full_run / "results" / "snakemake_report.zip") as archive:
        names = archive.namelist()
    for expected in (
        "report.html",
        "umap_cell_type.png",
        "integration_metrics.tsv",
        "summary.tsv",
        "volcano.png",
    ):
        assert any(n.endswith(expected) for n in names), f"{expected} not in the Snakemake report"


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------
class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe: the DevTools protocol as
    NUL-terminated JSON messages, commands on the child's fd 3, replies and events on its fd 4."""

    def __init__(self, width: int = 1366, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="sccohort-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def as_fd3_fd4():
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            command,
            pass_fds=(3, 4),
            preexec_fn=as_fd3_fd4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.width, self.height = width, height

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message from chromium")
            if select.select([self._read], [], [], left)[0]:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(max(0.01, deadline - time.monotonic())))

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(self._message(left))
            except TimeoutError:
                break

    def open(self, path: Path) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        self.settle(1.0)
        return session

    def evaluate(self, session: str, expression: str):
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, session: str, full_page: bool = False) -> bytes:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            height = self.evaluate(session, "document.documentElement.scrollHeight")
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": min(height, 16000), "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params, session=session)["data"])

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", "")[:500])
        return found

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


def _external(requests: list[str], page: Path) -> list[str]:
    """Requests other than the page itself and inline data: URIs."""
    return [u for u in requests if not u.startswith("data:") and u != page.resolve().as_uri()]


def _pixel_spread(png: bytes) -> float:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return float(image.std())


@needs_chromium
@pytest.mark.browser
def test_browser_detector_catches_errors_and_requests(chromium, tmp_path):
    """Control: a page with a script error, a console error and a request must be caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    chromium.open(page)
    assert len(chromium.errors()) >= 2
    assert any(u.startswith("http://127.0.0.1:9/") for u in _external(chromium.requests(), page))


@needs_chromium
@pytest.mark.browser
def test_browser_hostile_names_are_shown_not_run(synthetic, chromium):
    root, _, _, _, _ = synthetic
    page = root / "results" / "report.html"
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    assert chromium.evaluate(session, "typeof window.__pwned") == "undefined"
    assert chromium.evaluate(session, "typeof window.__pwned2") == "undefined"
    text = chromium.evaluate(session, "document.body.innerText")
    for hostile in (HOSTILE_CONDITION, HOSTILE_TYPE, HOSTILE_GENE):
        assert hostile in text
    # no element was created from a user string
    assert chromium.evaluate(session, "document.querySelectorAll('script').length") == 1
    assert chromium.evaluate(session, "document.querySelectorAll('img[onerror], b').length") == 0


@needs_chromium
@pytest.mark.browser
def test_browser_opens_the_workflow_report(full_report, chromium, tmp_path):
    project, _ = full_report
    page = project / "results" / "report.html"
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    headings = chromium.evaluate(
        session, "Array.from(document.querySelectorAll('section > h2')).map(h => h.id || h.parentElement.id)"
    )
    assert headings == list(SECTIONS)
    titles = chromium.evaluate(
        session, "Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent)"
    )
    assert titles == [
        "Run summary",
        "Quality control",
        "Integration",
        "Clustering and annotation",
        "Differential expression",
    ]
    broken = chromium.evaluate(
        session, "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
    )
    assert broken == 0
    png = chromium.screenshot(session)
    assert _pixel_spread(png) > 10, "the screenshot is blank"
    (tmp_path / "report_screenshot.png").write_bytes(chromium.screenshot(session, full_page=True))
    # The table script works: sorting a DE table by padj (numeric) and filtering by a gene name.
    table = chromium.evaluate(session, 'document.querySelector(\'table[id^="de-"][id$="-0"]\').id')
    column = chromium.evaluate(
        session,
        f"Array.from(document.getElementById('{table}').tHead.rows[0].cells).map(c => c.textContent).indexOf('log2FoldChange')",
    )
    values_js = f"Array.from(document.getElementById('{table}').tBodies[0].rows).map(r => parseFloat(r.cells[{column}].getAttribute('data-v')))"
    chromium.evaluate(session, f"document.getElementById('{table}').tHead.rows[0].cells[{column}].click()")
    ascending = chromium.evaluate(session, values_js)
    assert ascending == sorted(ascending)
    chromium.evaluate(session, f"document.getElementById('{table}').tHead.rows[0].cells[{column}].click()")
    assert chromium.evaluate(session, values_js) == sorted(ascending, reverse=True)
    gene = chromium.evaluate(
        session, f"document.getElementById('{table}').tBodies[0].rows[3].cells[0].textContent"
    )
    shown = chromium.evaluate(
        session,
        f"(() => {{ const i = document.querySelector('input[data-table=\"{table}\"]'); i.value = {json.dumps(gene)};"
        " i.dispatchEvent(new Event('input'));"
        f" return Array.from(document.getElementById('{table}').tBodies[0].rows).filter(r => r.style.display !== 'none').map(r => r.cells[0].textContent); }})()",
    )
    assert gene in shown and all(gene.lower() in g.lower() for g in shown)


@pytest.mark.slow
@needs_chromium
@pytest.mark.browser
def test_hostile_condition_and_cell_type_end_to_end(tmp_path, chromium):
    """A whole workflow run whose condition and a marker-table cell type carry markup."""
    markers = pd.read_csv(
        REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv", sep="\t", comment="#"
    )
    # (a cell type becomes part of an obs column name, score_<type>, so it cannot hold "/")
    markers["cell_type"] = markers["cell_type"].replace({"NK": HOSTILE_TYPE, "B": HOSTILE_TYPE_2})
    markers["parent"] = markers["parent"].fillna("") if "parent" in markers else ""
    project = make_project(
        tmp_path / "hostile",
        samples=("nCoV_PBMC_1", "Normal_PBMC_5"),
        n_cells=250,
        config_overrides={"de": {"contrasts": []}, "annotation": {"markers": "config/markers.tsv"}},
    )
    markers.to_csv(project / "config" / "markers.tsv", sep="\t", index=False)
    sheet = pd.read_csv(project / "config" / "samples.tsv", sep="\t")
    sheet["condition"] = sheet["condition"].replace({"COVID19": HOSTILE_CONDITION})
    sheet.to_csv(project / "config" / "samples.tsv", sep="\t", index=False)
    run_workflow(project, "results/report.html")
    page = project / "results" / "report.html"
    text = page.read_text()
    assert HOSTILE_CONDITION not in text and html.escape(HOSTILE_CONDITION) in text
    assert "Differential expression was not run: no contrast is configured" in text
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    assert chromium.evaluate(session, "typeof window.__pwned") == "undefined"
    assert chromium.evaluate(session, "typeof window.__pwned2") == "undefined"
    body = chromium.evaluate(session, "document.body.innerText")
    assert HOSTILE_CONDITION in body
    labels = pd.read_csv(project / "results" / "annotation" / "cluster_annotation.tsv", sep="\t")["label"]
    assert {HOSTILE_TYPE, HOSTILE_TYPE_2} & set(labels), "no hostile cell type was assigned"
    for label in set(labels) & {HOSTILE_TYPE, HOSTILE_TYPE_2}:
        assert label in body and html.escape(label) in text
    assert chromium.evaluate(session, "typeof window.__pwned3") == "undefined"
    assert chromium.evaluate(session, "document.querySelectorAll('script').length") == 1
