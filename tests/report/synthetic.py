"""Synthetic stage outputs with known numbers for the report's tests, and readers of the report's
HTML and of MultiQC custom content.

Imported by the tests of tests/report/ as `report.synthetic` (tests/ is on pythonpath).
"""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from sccohort.report.data import ReportInputs

HOSTILE_CONDITION = "<script>window.__pwned=1</script>"
HOSTILE_TYPE = "<img src=x onerror=window.__pwned2=1>NK"
HOSTILE_TYPE_2 = "<svg onload=window.__pwned3=1>B"
HOSTILE_GENE = "<b>GENE7</b>"
SECTIONS = ("summary", "qc", "integration", "clustering", "de")


def _bh(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1)
    return out


def write_png(path: Path, title: str) -> None:
    """A small real PNG standing in for a figure a stage writes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.set_title(title, fontsize=7)
    ax.plot([0, 1, 2], [0, 2, 1])
    fig.savefig(path, format="png", dpi=50)
    plt.close(fig)


def write_synthetic(
    root: Path,
    conditions=("ctrl", "ctrl", "stim", "stim"),
    cell_types=("T", "B", "Unknown"),
    n_cells: int = 400,
    with_de: bool = True,
    seed: int = 0,
) -> tuple[ReportInputs, dict, pd.DataFrame]:
    """Stage outputs of 4 samples (S3: doublet calling skipped), 3 clusters, one contrast (with
    the DE stage's volcano plots and heat map as small PNGs)."""
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
                    # the cohort-wide scIB metrics are on the "all" rows only
                    **(
                        {"scib_ilisi": mixing / 2, "scib_graph_connectivity_leiden_uncorrected": 0.8}
                        if cluster == "all"
                        else {}
                    ),
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
    inputs = ReportInputs(
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
            write_png(folder / "figures" / f"{group_file}.volcano.png", f"volcano {group_file}")
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
        write_png(folder / "figures" / "all_groups.lfc_heatmap.png", "heat map")
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
            # rows of a table without id (e.g. the column notes below a table) belong to no table
            self._table = self._row = None
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


def number(text: str) -> float:
    """A number as a table of the page shows it (thousands separators; empty: NaN)."""
    return float(text.replace(",", "")) if text.strip() else float("nan")


def mqc_table(text: str) -> pd.DataFrame:
    """The table of a MultiQC custom-content file (its YAML header skipped), indexed by sample."""
    return pd.read_csv(io.StringIO(text), sep="\t", comment="#", index_col=0)
