"""The aggregated, self-contained HTML report (results/report.html).

Built from the small tables and figures the stages write (thresholds.json, cells.tsv.gz, the
cohort's UMAP coordinate tables, integration diagnostics, markers, annotation and composition
tables, DE tables), never from the cohort h5ad. Every user string (sample names, conditions,
cell-type names, gene names, config values) is HTML-escaped by the html module; the page's only
script reads the DOM and holds no data. Images are inline PNGs; nothing is requested from a network.

Required inputs (a missing one raises InputError naming it): per-sample thresholds.json and
cells.tsv.gz, the UMAP coordinate tables, integration_metrics.tsv, cluster_annotation.tsv and
composition.tsv. Everything else (figures, method agreement, DE) is optional: its absence is
shown as a note.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import html  # noqa: E402
from .errors import InputError  # noqa: E402
from .plotting import point_legend  # noqa: E402

UNKNOWN = "Unknown"
# Reasons a barcode is removed, in the order the QC stage writes them (fail_reason, ';'-joined).
REMOVAL_REASONS = ("low_counts", "high_counts", "low_genes", "high_genes", "high_pct_mt", "doublet")
CELL_COLUMNS = ("total_counts", "n_genes_by_counts", "pct_counts_mt", "doublet_score", "qc_pass", "pass")
QC_METRICS = (
    ("total_counts", "total counts", True),
    ("n_genes_by_counts", "genes detected", True),
    ("pct_counts_mt", "% mitochondrial", False),
    ("doublet_score", "Scrublet doublet score", False),
)
FIGURE_DPI = 90


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
@dataclass
class ReportInputs:
    """Paths of everything the report reads. Dicts are keyed by sample (QC) or contrast (DE)."""

    thresholds: dict[str, str]
    cells: dict[str, str]
    umap: str
    umap_uncorrected: str
    integration_metrics: str
    cluster_annotation: str
    composition: str
    qc_pages: dict[str, str] = field(default_factory=dict)
    merge_summary: str | None = None
    markers: str | None = None
    composition_by_condition: str | None = None
    missing_markers: str | None = None
    method_agreement: str | None = None
    cluster_dotplot: str | None = None
    celltype_dotplot: str | None = None
    composition_plot: str | None = None
    integration_plot: str | None = None
    de_summary: str | None = None
    de_dirs: dict[str, str] = field(default_factory=dict)

    REQUIRED = (
        "umap",
        "umap_uncorrected",
        "integration_metrics",
        "cluster_annotation",
        "composition",
    )

    def check(self) -> None:
        """Raise InputError for a missing required input (optional ones may be None or absent)."""
        if not self.thresholds:
            raise InputError("The report needs at least one sample's thresholds.json; none was given.")
        missing = set(self.thresholds) ^ set(self.cells)
        if missing:
            raise InputError(
                f"Samples {sorted(missing)} have thresholds.json but no cells.tsv.gz (or the reverse); "
                "re-run the QC stage for them."
            )
        paths = [
            (f"{name} of sample {s}", p)
            for name in ("thresholds", "cells")
            for s, p in getattr(self, name).items()
        ]
        paths += [(name, getattr(self, name)) for name in self.REQUIRED]
        for label, path in paths:
            if not path or not Path(path).is_file():
                raise InputError(
                    f"Required report input {label} not found: {path!r}. Run the stage that writes it "
                    "(snakemake builds it when you ask for results/report.html)."
                )


def optional_path(path) -> Path | None:
    """`path` as a Path if given and present, else None."""
    return Path(path) if path and Path(path).exists() else None


def read_tsv(path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", **kwargs)
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read table {path}: {error}. Re-run the rule that writes it.") from None


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read {path}: {error}. Re-run the QC stage for this sample.") from None


def read_cells(path) -> pd.DataFrame:
    """The QC metrics of every barcode of one sample (cells.tsv.gz of the QC stage)."""
    cells = read_tsv(path, usecols=lambda c: c in CELL_COLUMNS)
    absent = [c for c in ("total_counts", "n_genes_by_counts", "pass") if c not in cells]
    if absent:
        raise InputError(f"{path} lacks column(s) {absent}; it must be the QC stage's cells.tsv.gz.")
    for column in ("pass", "qc_pass"):
        if column in cells:
            cells[column] = cells[column].astype(str).str.lower().isin(["true", "1"])
    if "qc_pass" not in cells:
        cells["qc_pass"] = cells["pass"]
    return cells


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------
def sample_qc_summary(thresholds: dict, cells: pd.DataFrame) -> dict:
    """One sample's QC numbers (shared by the report and the MultiQC files).

    cells_in: barcodes read; cells_after_qc: passing the QC thresholds; doublets: predicted among
    those; cells_kept: in filtered.h5ad (after doublet removal when doublets.action is remove);
    removed_<reason>: barcodes failing each test (a barcode failing two counts under both);
    medians over the kept cells; doublet_rate_pct: doublets / cells_after_qc (NaN when skipped).
    """
    status = thresholds.get("status", {})
    doublets = thresholds.get("doublets", {})
    kept = cells.loc[cells["pass"].astype(bool)]
    cells_in = int(status.get("n_cells_input", len(cells)))
    after_qc = int(status.get("n_cells_after_qc", int(cells["qc_pass"].sum())))
    n_doublets = int(status.get("n_doublets", 0))
    skipped = doublets.get("skipped")
    reasons = status.get("removed_by_reason", {}) or {}
    row = {
        "sample": str(thresholds.get("sample", status.get("sample", ""))),
        "cells_in": cells_in,
        "cells_after_qc": after_qc,
        "doublets": n_doublets,
        "cells_kept": int(status.get("n_cells_kept", len(kept))),
    }
    for reason in REMOVAL_REASONS:
        row[f"removed_{reason}"] = int(reasons.get(reason, 0))
    row["pct_kept"] = 100.0 * row["cells_kept"] / cells_in if cells_in else float("nan")
    row["median_counts"] = _median(kept, "total_counts")
    row["median_genes"] = _median(kept, "n_genes_by_counts")
    row["median_pct_mt"] = _median(kept, "pct_counts_mt")
    row["doublet_rate_pct"] = 100.0 * n_doublets / after_qc if after_qc and not skipped else float("nan")
    expected = doublets.get("expected_rate")
    row["expected_doublet_rate_pct"] = 100.0 * float(expected) if expected is not None else float("nan")
    row["doublets_skipped"] = str(skipped) if skipped else ""
    row["dropped"] = bool(status.get("dropped", False))
    return row


def _median(frame: pd.DataFrame, column: str) -> float:
    if column not in frame:
        return float("nan")
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def qc_summary_table(thresholds: Mapping[str, dict], cells: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    rows = [sample_qc_summary(thresholds[s], cells[s]) | {"sample": s} for s in thresholds]
    return pd.DataFrame(rows)


def final_cells_per_sample(composition: pd.DataFrame | None, umap: pd.DataFrame) -> pd.Series:
    """Cells per sample in the final object: composition.tsv when given, else the UMAP table."""
    if composition is not None and {"sample", "n_cells"} <= set(composition.columns):
        return composition.groupby("sample", sort=False)["n_cells"].sum().astype(int)
    return umap["sample"].astype(str).value_counts().astype(int)


def cells_per_step(qc: pd.DataFrame, final: pd.Series, sheet: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cells of each sample at each step, with a total row."""
    table = pd.DataFrame({"sample": qc["sample"].astype(str)})
    if sheet is not None and "condition" in sheet:
        table["condition"] = table["sample"].map(sheet["condition"].astype(str)).fillna("")
    table["cells in"] = qc["cells_in"].to_numpy()
    table["after QC thresholds"] = qc["cells_after_qc"].to_numpy()
    table["predicted doublets"] = qc["doublets"].to_numpy()
    table["after doublet removal"] = qc["cells_kept"].to_numpy()
    table["in final object"] = table["sample"].map(final).fillna(0).astype(int).to_numpy()
    table["status"] = [
        "dropped (too few cells)" if d else ("doublet calling skipped" if s else "ok")
        for d, s in zip(qc["dropped"], qc["doublets_skipped"], strict=True)
    ]
    total = {c: (table[c].sum() if pd.api.types.is_numeric_dtype(table[c]) else "") for c in table.columns}
    total["sample"] = "total"
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def checksums(paths: Mapping[str, str], chunk: int = 1 << 20) -> pd.DataFrame:
    """md5 and sha256 of every input file; a directory (10x mtx) is checksummed file by file.

    A path that no longer exists is listed as 'not found' (the report records, it does not fail).
    """
    rows = []
    for label, path in paths.items():
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        else:
            files = [path]
        for file in files:
            name = str(file)
            if not file.is_file():
                rows.append((label, name, np.nan, "not found", "not found"))
                continue
            md5, sha = hashlib.md5(), hashlib.sha256()
            with open(file, "rb") as handle:
                while block := handle.read(chunk):
                    md5.update(block)
                    sha.update(block)
            rows.append((label, name, file.stat().st_size, md5.hexdigest(), sha.hexdigest()))
    return pd.DataFrame(rows, columns=["input", "file", "bytes", "md5", "sha256"])


def subsample(frame: pd.DataFrame, max_points: int, seed: int) -> pd.DataFrame:
    """At most `max_points` rows, drawn at random with `seed`, in a random (seeded) order so
    that no group is systematically drawn on top of another."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    take = (
        rng.choice(n, size=min(n, int(max_points)), replace=False) if n > max_points else rng.permutation(n)
    )
    return frame.iloc[take]


def natural_order(values) -> list[str]:
    """Unique values as strings, numbers numerically first (cluster ids 0, 1, 2, ..., 10)."""
    unique = list(dict.fromkeys(str(v) for v in values))
    return sorted(unique, key=lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, v))


def _is_number(value: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))


def cluster_key_for(config: Mapping) -> tuple[str, str]:
    """(cohort default cluster column, annotation cluster column) from the config."""
    from .cohort import leiden_key

    cohort = config.get("cohort", {})
    default = leiden_key(float(cohort.get("default_resolution", 0.5)))
    resolution = config.get("annotation", {}).get("resolution")
    annotation = leiden_key(float(resolution)) if resolution is not None else default
    return default, annotation


def cell_type_per_cell(umap: pd.DataFrame, clusters: pd.DataFrame, cluster_key: str) -> pd.Series | None:
    """Each cell's label via its annotation cluster (cluster_annotation.tsv: cluster -> label).

    None when the UMAP table lacks the cluster column (the figure is then skipped with a note).
    """
    if cluster_key not in umap or not {"cluster", "label"} <= set(clusters.columns):
        return None
    label_of = dict(zip(clusters["cluster"].astype(str), clusters["label"].astype(str), strict=True))
    return umap[cluster_key].astype(str).map(label_of).fillna(UNKNOWN)


def top_de_genes(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n genes with the smallest adjusted p-value (then p-value, then largest |log2FC|)."""
    frame = table.copy()
    frame["_abs"] = -frame["log2FoldChange"].abs()
    frame = frame.sort_values(["padj", "pvalue", "_abs"], na_position="last", kind="stable")
    return frame.drop(columns="_abs").head(int(n)).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Colours and figures
# --------------------------------------------------------------------------------------------
def palette(labels: Sequence[str], cycle: str | None = None) -> dict[str, str]:
    """Stable colours per label in the given order; Unknown is light grey.

    Default: tab10 up to 10 labels, else tab20 + tab20b + tab20c, then evenly spaced hues.
    cycle="tab20": tab20 repeated, as the annotation stage colours cell types (so the report's
    UMAP by cell type matches its composition figure).
    """
    named = [label for label in labels if label != UNKNOWN]
    if cycle:
        base = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps[cycle].colors]
        colours = [base[i % len(base)] for i in range(len(named))]
    else:
        colours = []
        for name in ("tab20", "tab20b", "tab20c") if len(named) > 10 else ("tab10",):
            colours += [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps[name].colors]
        if len(named) > len(colours):
            hsv = matplotlib.colormaps["hsv"]
            colours = [matplotlib.colors.to_hex(hsv(i / len(named))) for i in range(len(named))]
    out = {label: colours[i] for i, label in enumerate(named)}
    if UNKNOWN in labels:
        out[UNKNOWN] = "#cccccc"
    return out


def _point_size(n: int) -> float:
    return float(np.clip(40000 / max(n, 1), 0.4, 12))


def scatter_panel(ax, x, y, labels, colours: dict, title: str, legend: str = "right") -> None:
    """Cells coloured by a label. legend: right (a legend beside the panel), centroids (the
    label written at each group's median) or none."""
    labels = np.asarray(labels, dtype=str)
    ax.scatter(
        x,
        y,
        c=[colours.get(v, "#cccccc") for v in labels],
        s=_point_size(len(labels)),
        linewidths=0,
        rasterized=True,
    )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1", fontsize=8)
    ax.set_ylabel("UMAP 2", fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    present = [c for c in colours if (labels == c).any()]
    if legend == "centroids" or (legend == "right" and len(present) > 40):
        for label in present:
            members = labels == label
            ax.text(
                np.median(x[members]),
                np.median(y[members]),
                label,
                fontsize=8,
                weight="bold",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.6},
            )
    elif legend == "right":
        point_legend(ax, [(_short(c), colours[c]) for c in present], single_column_max=18)


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "\u2026"


def plot_umap_grid(
    panels: Sequence[tuple[str, pd.DataFrame, str]],
    colours: Mapping[str, dict],
    ncols: int = 2,
    legend: Mapping[str, str] | None = None,
):
    """UMAP panels: each (title, table with UMAP1/UMAP2 and the colour column, colour column)."""
    legend = legend or {}
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 4.6 * nrows), squeeze=False)
    for ax, (title, frame, key) in zip(axes.ravel(), panels, strict=False):
        scatter_panel(
            ax,
            frame["UMAP1"].to_numpy(),
            frame["UMAP2"].to_numpy(),
            frame[key].astype(str).to_numpy(),
            colours[key],
            title,
            legend=legend.get(key, "right"),
        )
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_qc_metrics(
    cells: Mapping[str, pd.DataFrame], thresholds: Mapping[str, dict], max_points: int, seed: int
):
    """Per sample, every barcode's metrics (a seeded subsample for big cohorts) coloured kept /
    failed QC / doublet, with that sample's thresholds as red bars (dashed: lower, solid: upper)."""
    samples = list(cells)
    per_sample = max(200, int(max_points) // max(len(samples), 1))
    fig, axes = plt.subplots(
        len(QC_METRICS), 1, figsize=(max(8.0, 0.6 * len(samples) + 3), 2.3 * len(QC_METRICS)), sharex=True
    )
    rng = np.random.default_rng(seed)
    # drawn in this order: failed barcodes behind the kept cells, doublets on top
    colours = {"failed QC": "#9a9a9a", "kept": "#2a9d58", "doublet": "#e07b00"}
    for i, sample in enumerate(samples):
        frame = subsample(cells[sample], per_sample, seed + i)
        category = np.where(frame["pass"], "kept", np.where(frame["qc_pass"], "doublet", "failed QC"))
        jitter = i + rng.uniform(-0.32, 0.32, len(frame))
        qc = thresholds[sample].get("qc", {})
        doublet_threshold = thresholds[sample].get("doublets", {}).get("threshold")
        for ax, (metric, _, _) in zip(axes, QC_METRICS, strict=True):
            if metric not in frame:
                continue
            values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
            for name, colour in colours.items():
                members = (category == name) & np.isfinite(values)
                ax.scatter(jitter[members], values[members], s=1.5, c=colour, linewidths=0, rasterized=True)
            limits = (
                {"upper": doublet_threshold}
                if metric == "doublet_score"
                else {b: qc.get(metric, {}).get(b) for b in ("lower", "upper")}
            )
            for bound, limit in limits.items():
                if limit is not None:
                    ax.hlines(
                        limit,
                        i - 0.42,
                        i + 0.42,
                        colors="#d62728",
                        linewidth=1.8,
                        linestyles="--" if bound == "lower" else "-",
                    )
    for ax, (_, label, log_scale) in zip(axes, QC_METRICS, strict=True):
        if log_scale:
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", color="#eee")
    axes[-1].set_xticks(range(len(samples)))
    axes[-1].set_xticklabels(
        [_short(s, 24) for s in samples],
        rotation=45 if len(samples) > 4 else 0,
        ha="right" if len(samples) > 4 else "center",
        fontsize=8,
    )
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=n) for n, c in colours.items()]
    handles += [
        Line2D([], [], color="#d62728", ls="--", label="lower threshold"),
        Line2D([], [], color="#d62728", ls="-", label="upper threshold"),
    ]
    axes[0].legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0, 1.02), ncol=5, fontsize=7, frameon=False
    )
    fig.tight_layout()
    return fig


def plot_cells_kept(qc: pd.DataFrame):
    """Stacked bars per sample: kept, removed as doublets, failed QC thresholds (exclusive)."""
    samples = qc["sample"].astype(str).tolist()
    kept = qc["cells_kept"].to_numpy()
    doublets_removed = qc["cells_after_qc"].to_numpy() - kept
    failed = qc["cells_in"].to_numpy() - qc["cells_after_qc"].to_numpy()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(samples) + 1.3))
    y = np.arange(len(samples))
    left = np.zeros(len(samples))
    for values, name, colour in (
        (kept, "kept", "#2a9d58"),
        (doublets_removed, "removed: doublet", "#e07b00"),
        (failed, "removed: failed QC", "#9a9a9a"),
    ):
        ax.barh(y, values, left=left, color=colour, label=name)
        left += values
    ax.set_yticks(y)
    ax.set_yticklabels([_short(s, 24) for s in samples], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("barcodes", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def plot_cluster_sizes(counts: pd.DataFrame, colours: Mapping[str, str]):
    """Cells per cluster, stacked by sample (counts: clusters x samples)."""
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(counts) + 3.5), 3.8))
    bottom = np.zeros(len(counts))
    x = np.arange(len(counts))
    for sample in counts.columns:
        values = counts[sample].to_numpy()
        ax.bar(x, values, bottom=bottom, color=colours[sample], label=_short(sample, 24), width=0.8)
        bottom += values
    ax.set_xticks(x)
    ax.set_xticklabels(counts.index, fontsize=8)
    ax.set_xlabel("cluster", fontsize=8)
    ax.set_ylabel("cells", fontsize=8)
    ax.legend(
        fontsize=7,
        frameon=False,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        ncol=1 if counts.shape[1] <= 18 else 2,
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def plot_volcano(table: pd.DataFrame, alpha: float, title: str, n_labels: int = 8):
    """log2 fold change vs -log10 p-value; genes with padj < alpha coloured, the top ones named."""
    lfc = pd.to_numeric(table["log2FoldChange"], errors="coerce").to_numpy(dtype=float)
    pvalue = pd.to_numeric(table["pvalue"], errors="coerce").to_numpy(dtype=float)
    padj = pd.to_numeric(table["padj"], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(lfc) & np.isfinite(pvalue)
    tiny = np.nanmin(pvalue[pvalue > 0]) if (pvalue > 0).any() else 1e-300
    y = -np.log10(np.clip(pvalue, tiny, None))
    called = np.nan_to_num(padj, nan=1.0) < alpha
    up, down = called & (lfc > 0), called & (lfc < 0)
    fig, ax = plt.subplots(figsize=(5.0, 3.9))
    rest = finite & ~called
    ax.scatter(
        lfc[rest], y[rest], s=3, c="#b8b8b8", linewidths=0, rasterized=True, label=f"n.s. ({rest.sum()})"
    )
    ax.scatter(
        lfc[up & finite],
        y[up & finite],
        s=5,
        c="#c0392b",
        linewidths=0,
        rasterized=True,
        label=f"up ({up.sum()})",
    )
    ax.scatter(
        lfc[down & finite],
        y[down & finite],
        s=5,
        c="#2471a3",
        linewidths=0,
        rasterized=True,
        label=f"down ({down.sum()})",
    )
    top = top_de_genes(table.assign(_row=np.arange(len(table))), n_labels)
    for _, row in top.iterrows():
        i = int(row["_row"])
        if called[i] and finite[i]:
            ax.annotate(
                str(row["gene"]), (lfc[i], y[i]), fontsize=7, xytext=(3, 2), textcoords="offset points"
            )
    ax.axvline(0, color="#888", linewidth=0.6)
    ax.set_xlabel("log2 fold change", fontsize=8)
    ax.set_ylabel("-log10 p-value", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def figure_uri(fig) -> str:
    try:
        return html.figure_to_data_uri(fig, dpi=FIGURE_DPI)
    finally:
        plt.close(fig)


def embedded(path, alt: str, caption: str | None = None, missing: str | None = None, size: str = "l") -> str:
    """An inline copy of a stage's PNG (at most 640 / 900 / 1100 px wide for size s / m / l), or
    a note when that optional figure is absent."""
    found = optional_path(path)
    if found is None:
        return note(missing or f"{alt}: figure not available.")
    return f'<div class="fig-{size}">{html.image(html.file_to_data_uri(found), alt, caption)}</div>'


# --------------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------------
def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def warning_box(messages: Sequence[str]) -> str:
    return "".join(f'<div class="warn">{html.escape(m)}</div>' for m in messages)


def details(summary: str, inner: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>{inner}</details>"


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(html.format_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)}</td></tr>"
        for k, v in pairs
    )
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def config_yaml(config: Mapping) -> str:
    import yaml

    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
@dataclass
class ReportData:
    """Everything read from the inputs (tables only), plus the warnings collected on the way."""

    qc: pd.DataFrame
    cells: dict[str, pd.DataFrame]
    thresholds: dict[str, dict]
    umap: pd.DataFrame
    umap_uncorrected: pd.DataFrame
    metrics: pd.DataFrame
    clusters: pd.DataFrame
    composition: pd.DataFrame
    cluster_key: str = ""
    annotation_key: str = ""


def load(inputs: ReportInputs) -> ReportData:
    inputs.check()
    thresholds = {s: read_json(p) for s, p in inputs.thresholds.items()}
    cells = {s: read_cells(inputs.cells[s]) for s in inputs.thresholds}
    qc = qc_summary_table(thresholds, cells)
    return ReportData(
        qc=qc,
        cells=cells,
        thresholds=thresholds,
        umap=read_tsv(inputs.umap, dtype={"sample": str, "condition": str}),
        umap_uncorrected=read_tsv(inputs.umap_uncorrected, dtype={"sample": str, "condition": str}),
        metrics=read_tsv(inputs.integration_metrics, dtype={"cluster": str}),
        clusters=read_tsv(
            inputs.cluster_annotation, dtype={"cluster": str, "label": str}, keep_default_na=False
        ),
        composition=read_tsv(
            inputs.composition,
            dtype={"sample": str, "condition": str, "cell_type": str},
            keep_default_na=False,
        ),
    )


def qc_warnings(data: ReportData) -> list[str]:
    messages = []
    for sample, info in data.thresholds.items():
        status = info.get("status", {})
        if status.get("warning"):
            messages.append(str(status["warning"]))
        elif status.get("dropped"):
            messages.append(f"Sample {sample} was dropped from the cohort (too few cells after QC).")
        skipped = info.get("doublets", {}).get("skipped")
        if skipped:
            messages.append(f"Sample {sample}: doublet calling skipped: {skipped}")
        for text in info.get("notes", []) or []:
            messages.append(f"Sample {sample}: {text}")
    return messages


def section_summary(
    data: ReportData,
    inputs: ReportInputs,
    sheet: pd.DataFrame | None,
    config: Mapping,
    versions: Mapping[str, str],
    input_checksums: pd.DataFrame,
    warnings: Sequence[str],
    created: str,
) -> str:
    final = final_cells_per_sample(data.composition, data.umap)
    steps = cells_per_step(data.qc, final, sheet)
    total = steps.iloc[-1]
    conditions = (
        sorted(sheet["condition"].astype(str).unique()) if sheet is not None and "condition" in sheet else []
    )
    overview = key_values(
        [
            ("created", created),
            ("samples", f"{len(data.qc)} ({int(data.qc['dropped'].sum())} dropped by QC)"),
            ("conditions", ", ".join(conditions) or "-"),
            ("cells in", int(total["cells in"])),
            ("after QC thresholds", int(total["after QC thresholds"])),
            ("after doublet removal", int(total["after doublet removal"])),
            ("in the final object", int(total["in final object"])),
            (
                "clusters",
                data.umap[data.cluster_key].nunique() if data.cluster_key in data.umap else "-",
            ),
            (
                "cell types",
                ", ".join(natural_order(data.clusters["label"])) if "label" in data.clusters else "-",
            ),
            ("results folder", config.get("results", "results")),
        ]
    )
    classes = [""] * (len(steps) - 1) + ["total"]
    parts = [
        "<h3>Warnings</h3>" + (warning_box(warnings) if warnings else '<p class="ok">No warnings.</p>'),
        "<h3>Overview</h3>" + overview,
        "<h3>Cells at each step</h3>"
        + html.data_table(steps, "cells-per-step", row_classes=classes)
        + note(
            "After QC thresholds: barcodes within every sample's count, gene and % mito limits. "
            "After doublet removal: cells in filtered.h5ad. In final object: cells of the annotated "
            "cohort (results/cohort/integrated.h5ad)."
        ),
    ]
    if sheet is not None:
        parts.append(
            "<h3>Samples</h3>"
            + html.data_table(
                sheet if "sample" in sheet.columns else sheet.reset_index(),
                "sample-sheet",
                searchable=len(sheet) > 12,
            )
        )
    version_table = pd.DataFrame(sorted(versions.items()), columns=["package", "version"])
    parts.append("<h3>Software</h3>" + html.data_table(version_table, "versions", sortable=False))
    parts.append(
        details(
            f"Input file checksums ({len(input_checksums)} files)",
            html.data_table(input_checksums, "checksums", searchable=True, scroll=True),
        )
    )
    parts.append(
        details(
            "Configuration used (config.yaml after defaults)",
            f"<pre>{html.escape(config_yaml(config))}</pre>",
        )
    )
    return "".join(parts)


def section_qc(
    data: ReportData, inputs: ReportInputs, sheet, report_dir: Path, max_points: int, seed: int
) -> str:
    qc = data.qc
    table = pd.DataFrame({"sample": qc["sample"]})
    if sheet is not None and "condition" in sheet:
        table["condition"] = table["sample"].map(sheet["condition"].astype(str)).fillna("")
    table["cells in"] = qc["cells_in"]
    for reason in REMOVAL_REASONS:
        table[reason.replace("_", " ").replace("pct mt", "% mito")] = qc[f"removed_{reason}"]
    table["cells kept"] = qc["cells_kept"]
    table["% kept"] = qc["pct_kept"].round(1)
    table["median counts"] = qc["median_counts"].round(0)
    table["median genes"] = qc["median_genes"].round(0)
    table["median % mito"] = qc["median_pct_mt"].round(2)
    table["doublet rate %"] = qc["doublet_rate_pct"].round(2)
    table["expected doublet rate %"] = qc["expected_doublet_rate_pct"].round(2)
    links = []
    for sample in qc["sample"]:
        page = inputs.qc_pages.get(sample)
        if page:
            rel = os.path.relpath(Path(page), report_dir).replace(os.sep, "/")
            href = "/".join(quote(part) for part in rel.split("/"))
            links.append(f'<a href="{html.escape(href)}">open</a>')
        else:
            links.append("")
    table["QC page"] = links
    status = [
        "dropped" if d else ("no doublet calling" if s else "ok")
        for d, s in zip(qc["dropped"], qc["doublets_skipped"], strict=True)
    ]
    table["status"] = status
    warnings = qc_warnings(data)
    parts = [
        (warning_box(warnings) if warnings else ""),
        html.data_table(table, "qc-table", html_columns=["QC page"], searchable=len(table) > 12, scroll=True),
        note(
            "Removed by reason: barcodes failing each test (a barcode failing two tests counts under both). "
            "Medians over the kept cells. Doublet rate: predicted doublets among the cells passing the "
            "QC thresholds. Each sample's own page (QC page) shows its histograms and thresholds."
        ),
        '<div class="grid">',
        html.image(
            figure_uri(plot_cells_kept(qc)),
            "cells kept and removed per sample",
            "Barcodes per sample: kept, removed as doublets, removed by the QC thresholds.",
        ),
        "</div>",
        html.image(
            figure_uri(plot_qc_metrics(data.cells, data.thresholds, max_points, seed)),
            "QC metrics per sample with thresholds",
            "Every barcode (a seeded subsample for large cohorts) by sample; red bars: that sample's "
            "thresholds (dashed lower, solid upper; the doublet row shows Scrublet's threshold).",
        ),
    ]
    return "".join(parts)


def section_integration(
    data: ReportData, inputs: ReportInputs, config: Mapping, max_points: int, seed: int
) -> str:
    integration = config.get("cohort", {}).get("integration", "harmony")
    after = subsample(data.umap, max_points, seed)
    keys = [k for k in ("sample", "condition") if k in after]
    colours = {
        k: palette(natural_order(data.umap[k]) if k != "sample" else list(dict.fromkeys(data.qc["sample"])))
        for k in keys
    }
    panels = []
    if integration != "none":
        before = data.umap_uncorrected.set_index("barcode").reindex(after["barcode"]).reset_index()
        before = before.dropna(subset=["UMAP1", "UMAP2"])
        panels += [(f"before integration (PCA): {k}", before, k) for k in keys]
        panels += [(f"after {integration}: {k}", after, k) for k in keys]
        intro = note(
            f"UMAP of the uncorrected PCA (top) and after {integration} (bottom). Well-integrated samples "
            "of the same cell types overlap after correction; condition differences may remain."
        )
    else:
        panels += [(f"no integration (cohort.integration: none): {k}", after, k) for k in keys]
        intro = note("cohort.integration is none: one UMAP of the uncorrected PCA.")
    parts = [intro]
    if len(data.umap) > max_points:
        parts.append(
            note(f"Drawn on a random subsample of {max_points:,} of {len(data.umap):,} cells (seed {seed}).")
        )
    fig = plot_umap_grid(panels, colours, ncols=max(len(keys), 1))
    parts.append(html.image(figure_uri(fig), "UMAP before and after integration"))
    metrics = data.metrics
    overall = metrics[metrics["cluster"].astype(str) == "all"].drop(columns=["cluster"])
    parts.append("<h3>Integration diagnostics</h3>")
    parts.append(
        html.data_table(overall.round(4), "integration-overall")
        + note(
            "batch_mixing: mean fraction of a cell's neighbours from other batches; batch_mixing_expected: "
            "the same for random neighbours within the cell's cluster; ratio 1 = as mixed as random. "
            "cluster_purity: mean fraction of neighbours in the cell's own cluster (high = structure kept)."
        )
    )
    per_cluster = metrics[metrics["cluster"].astype(str) != "all"]
    if len(per_cluster):
        parts.append(
            details(
                "Diagnostics per cluster",
                html.data_table(per_cluster.round(4), "integration-clusters", searchable=True, scroll=True),
            )
        )
    if inputs.integration_plot:
        parts.append(embedded(inputs.integration_plot, "integration diagnostics per cluster", size="s"))
    return "".join(parts)


def section_clustering(
    data: ReportData, inputs: ReportInputs, config: Mapping, max_points: int, seed: int, warnings: list
) -> str:
    default_key, annotation_key = data.cluster_key, data.annotation_key
    umap = data.umap
    parts = []
    if default_key not in umap:
        leiden = [c for c in umap.columns if c.startswith("leiden_")]
        if not leiden:
            raise InputError(f"{inputs.umap} has no leiden_* column; re-run the cohort stage.")
        default_key = leiden[0]
    cell_types = cell_type_per_cell(umap, data.clusters, annotation_key)
    type_order = (
        list(dict.fromkeys(data.composition["cell_type"].astype(str)))
        if "cell_type" in data.composition
        else []
    )
    frame = umap.assign(cell_type=cell_types) if cell_types is not None else umap
    shown = subsample(frame, max_points, seed)
    clusters = natural_order(umap[default_key])
    colours = {default_key: palette(clusters)}
    panels = [(f"Leiden clusters ({default_key})", shown, default_key)]
    legends = {default_key: "centroids"}
    if cell_types is not None:
        type_order += [t for t in natural_order(cell_types) if t not in type_order]
        colours["cell_type"] = palette(type_order, cycle="tab20")
        panels.append(("cell type", shown, "cell_type"))
    else:
        parts.append(note(f"The UMAP table has no {annotation_key} column: no UMAP by cell type."))
    parts.append(
        html.image(
            figure_uri(plot_umap_grid(panels, colours, ncols=2, legend=legends)),
            "UMAP by cluster and cell type",
        )
    )
    if len(umap) > max_points:
        parts.append(
            note(f"Drawn on a random subsample of {max_points:,} of {len(umap):,} cells (seed {seed}).")
        )

    # Cluster sizes per sample.
    samples = list(dict.fromkeys(data.qc["sample"]))
    counts = pd.crosstab(umap[default_key].astype(str), umap["sample"].astype(str)).reindex(index=clusters)
    counts = counts.reindex(
        columns=[s for s in samples if s in counts.columns] + [c for c in counts.columns if c not in samples],
        fill_value=0,
    )
    sample_colours = palette(list(counts.columns))
    parts.append("<h3>Cluster sizes per sample</h3>")
    parts.append(
        html.image(figure_uri(plot_cluster_sizes(counts, sample_colours)), "cells per cluster and sample")
    )
    sizes = counts.copy()
    sizes.insert(0, "total", sizes.sum(axis=1))
    sizes["largest sample %"] = (100 * counts.max(axis=1) / counts.sum(axis=1).replace(0, np.nan)).round(1)
    sizes = sizes.reset_index().rename(columns={default_key: "cluster"})
    if default_key == annotation_key and {"cluster", "label"} <= set(data.clusters.columns):
        sizes.insert(
            1,
            "cell type",
            sizes["cluster"].map(dict(zip(data.clusters["cluster"], data.clusters["label"], strict=True))),
        )
    parts.append(
        details(
            "Cells per cluster and sample (table)",
            html.data_table(sizes, "cluster-sizes", scroll=True)
            + note(
                "largest sample %: share of the cluster's cells from its largest sample (near 100 = sample-specific cluster)."
            ),
        )
    )

    # Annotation.
    parts.append("<h3>Cell-type annotation</h3>")
    unknown = (
        data.clusters.loc[data.clusters["label"] == UNKNOWN, "cluster"].tolist()
        if "label" in data.clusters
        else []
    )
    if unknown:
        warnings.append(
            f"{len(unknown)} cluster(s) labelled Unknown (no confident marker match): {', '.join(map(str, unknown))}."
        )
        parts.append(warning_box([warnings[-1]]))
    columns = [
        c
        for c in (
            "cluster",
            "label",
            "n_cells",
            "best_type",
            "score",
            "second_type",
            "margin",
            "cell_agreement",
            "top_markers",
            "reason",
        )
        if c in data.clusters
    ]
    parts.append(
        html.data_table(
            data.clusters[columns], "cluster-annotation", searchable=len(data.clusters) > 15, scroll=True
        )
    )
    parts.append(
        note(
            f"Each cluster of {annotation_key} takes the cell type with the highest mean marker score if it is confident enough; see cluster_annotation.tsv for every column."
        )
    )
    agreement = optional_path(inputs.method_agreement)
    if agreement is not None:
        parts.append(
            "<h4>Agreement between annotation methods</h4>"
            + html.data_table(read_tsv(agreement), "method-agreement", scroll=True)
        )
    else:
        parts.append(
            note(
                "Only the marker-based annotation ran (no CellTypist model or reference configured): no method comparison."
            )
        )
    missing = optional_path(inputs.missing_markers)
    if missing is not None:
        table = read_tsv(missing, keep_default_na=False)
        if len(table):
            parts.append(
                details(
                    f"Marker genes absent from the data or constant ({len(table)})",
                    html.data_table(table, "missing-markers", searchable=True, scroll=True),
                )
            )

    # Marker dot plots.
    parts.append("<h3>Marker genes</h3>")
    parts.append(
        embedded(
            inputs.celltype_dotplot,
            "marker dot plot by cell type",
            "Markers of the marker table by assigned cell type.",
            "Dot plot by cell type not available.",
        )
    )
    parts.append(
        embedded(
            inputs.cluster_dotplot,
            "marker dot plot by cluster",
            f"Top data-driven markers per cluster ({default_key}).",
            "Dot plot by cluster not available.",
        )
    )
    markers = optional_path(inputs.markers)
    if markers is not None:
        table = read_tsv(markers, dtype={"cluster": str, "gene": str}, keep_default_na=False)
        if len(table):
            top = table[pd.to_numeric(table["rank"], errors="coerce") <= 10]
            cols = [
                c
                for c in (
                    "cluster",
                    "rank",
                    "gene",
                    "score",
                    "logfoldchange",
                    "pval_adj",
                    "pct_in",
                    "pct_out",
                )
                if c in top
            ]
            parts.append(
                details(
                    "Top 10 marker genes per cluster (table)",
                    html.data_table(top[cols], "cluster-markers", searchable=True, scroll=True),
                )
            )

    # Composition.
    parts.append("<h3>Composition per sample and condition</h3>")
    parts.append(
        embedded(
            inputs.composition_plot,
            "cell-type composition",
            None,
            "Composition figure not available.",
            size="m",
        )
    )
    comp = data.composition
    if {"sample", "cell_type", "fraction"} <= set(comp.columns) and len(comp):
        wide = comp.pivot_table(index="sample", columns="cell_type", values="fraction", sort=False).reindex(
            columns=[t for t in type_order if t in set(comp["cell_type"])]
        )
        wide = (100 * wide).round(1)
        if "condition" in comp:
            wide.insert(
                0,
                "condition",
                comp.drop_duplicates("sample").set_index("sample")["condition"].reindex(wide.index),
            )
        parts.append(
            details(
                "% of each sample's cells per cell type",
                html.data_table(wide.reset_index(), "composition-sample", scroll=True),
                open_=False,
            )
        )
    by_condition = optional_path(inputs.composition_by_condition)
    if by_condition is not None:
        table = read_tsv(by_condition, dtype={"condition": str, "cell_type": str}, keep_default_na=False)
        if len(table):
            table = table.copy()
            for c in ("fraction_pooled", "mean_sample_fraction", "sd_sample_fraction"):
                if c in table:
                    table[c] = (100 * pd.to_numeric(table[c], errors="coerce")).round(2)
            table = table.rename(
                columns={
                    "fraction_pooled": "% pooled",
                    "mean_sample_fraction": "mean % of samples",
                    "sd_sample_fraction": "SD % of samples",
                }
            )
            parts.append(
                details(
                    "% per condition (pooled and mean of samples)",
                    html.data_table(table, "composition-condition", searchable=True, scroll=True),
                    open_=True,
                )
            )
    return "".join(parts)


def de_summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The DE summary as shown: pseudobulk samples and cells as 'test / reference' pairs."""
    shown = summary[[c for c in ("contrast", "group", "status") if c in summary]].copy()

    def pair(kind: str) -> list[str]:
        test, reference = f"n_{kind}_test", f"n_{kind}_reference"
        if test not in summary or reference not in summary:
            return [""] * len(summary)
        return [
            f"{html.format_number(t)} / {html.format_number(r)}"
            for t, r in zip(summary[test], summary[reference], strict=True)
        ]

    shown["samples (test / ref.)"] = pair("samples")
    shown["cells (test / ref.)"] = pair("cells")
    for column in ("genes_tested", "up", "down", "reason"):
        if column in summary:
            shown[column.replace("_", " ")] = summary[column].to_numpy()
    return shown


def section_de(
    inputs: ReportInputs, config: Mapping, contrasts: Sequence[Mapping], top_genes: int, warnings: list
) -> str:
    de = config.get("de", {})
    summary_path = optional_path(inputs.de_summary)
    if not contrasts or summary_path is None:
        reason = (
            "no contrast is configured (de.contrasts is empty)"
            if not contrasts
            else "results/de/summary.tsv is absent"
        )
        return note(f"Differential expression was not run: {reason}.")
    alpha = float(de.get("alpha", 0.05))
    summary = read_tsv(summary_path, dtype=str, keep_default_na=False)
    for column in (
        "n_samples_test",
        "n_samples_reference",
        "n_cells_test",
        "n_cells_reference",
        "genes_tested",
        "up",
        "down",
    ):
        if column in summary:
            summary[column] = pd.to_numeric(summary[column], errors="coerce")
    skipped = summary[summary["status"] != "tested"]
    messages = [f"DE {r.contrast} / {r.group}: skipped: {r.reason}" for r in skipped.itertuples()]
    warnings.extend(messages)
    shown = de_summary_table(summary)
    parts = [
        note(
            f"Pseudobulk (sum of raw counts per sample and {de.get('group_by', 'group')}), PyDESeq2 with design "
            f"{de.get('design', '')}; up/down: genes with adjusted p-value < {alpha:g}. Skipped groups give their reason."
        ),
        html.data_table(
            shown,
            "de-summary",
            searchable=len(summary) > 10,
            scroll=True,
            row_classes=["" if s == "tested" else "skipped" for s in summary["status"]],
        ),
    ]
    if messages:
        parts.append(details(f"Skipped groups ({len(messages)})", warning_box(messages)))
    for contrast in contrasts:
        name = contrast.get("name") or f"{contrast['test']}_vs_{contrast['reference']}"
        folder = optional_path(inputs.de_dirs.get(name))
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(
            note(
                f"{contrast.get('factor', '')}: {contrast.get('test', '')} vs {contrast.get('reference', '')} (positive log2 fold change = higher in {contrast.get('test', '')})."
            )
        )
        if folder is None:
            parts.append(note(f"No result folder for contrast {name}."))
            continue
        tested = summary[(summary["contrast"] == name) & (summary["status"] == "tested")]
        if tested.empty:
            parts.append(note("No group could be tested for this contrast."))
        heatmap = folder / "figures" / "all_groups.lfc_heatmap.png"
        if heatmap.is_file():
            parts.append(
                details(
                    "Top genes of every group (log2 fold-change heat map)",
                    embedded(heatmap, "log2 fold-change heat map"),
                )
            )
        for i, row in enumerate(tested.itertuples()):
            table_path = folder / f"{row.group_file}.tsv"
            if not table_path.is_file():
                parts.append(note(f"{row.group}: result table {table_path} not found."))
                continue
            table = read_tsv(
                table_path, dtype={"gene": str}, keep_default_na=False, na_values=["", "NA", "NaN", "nan"]
            )
            top = top_de_genes(table, top_genes)
            shown = [
                c
                for c in (
                    "gene",
                    "log2FoldChange",
                    "log2FoldChange_shrunk",
                    "padj",
                    "pvalue",
                    "baseMean",
                    "lfcSE",
                    "stat",
                )
                if c in top
            ]
            table_id = f"de-{_slug(name)}-{_slug(str(row.group_file))}-{i}"
            volcano = plot_volcano(table, alpha, f"{row.group}: {name}")
            inner = (
                '<div class="de-group">'
                + html.image(figure_uri(volcano), f"volcano plot {row.group}")
                + '<div class="tablebox">'
                + html.data_table(
                    top[shown], table_id, searchable=True, scroll=True, placeholder="search genes..."
                )
                + note(
                    f"Top {len(top)} of {len(table):,} tested genes by adjusted p-value; full table: {table_path.name}."
                )
                + "</div></div>"
            )
            label = f"{row.group}: {int(row.up) if pd.notna(row.up) else 0} up, {int(row.down) if pd.notna(row.down) else 0} down of {int(row.genes_tested) if pd.notna(row.genes_tested) else 0} genes"
            parts.append(details(label, inner, open_=(i == 0)))
    return "".join(parts)


def build_report(
    inputs: ReportInputs,
    config: Mapping,
    sheet: pd.DataFrame | None = None,
    versions: Mapping[str, str] | None = None,
    checksum_paths: Mapping[str, str] | None = None,
    report_path: str | Path = "results/report.html",
    title: str | None = None,
    max_points: int | None = None,
    top_genes: int | None = None,
    seed: int | None = None,
    created: str | None = None,
    contrasts: Sequence[Mapping] | None = None,
    cluster_key: str | None = None,
    annotation_key: str | None = None,
) -> str:
    """The whole report as one HTML string.

    sheet: the sample sheet indexed by sample (shown and used for conditions); versions: package
    versions; checksum_paths: label -> input file or directory to checksum; report_path: where
    the page will be written (links to the per-sample QC pages are relative to it); contrasts:
    the DE contrasts as the DE stage normalised them (default: config de.contrasts);
    cluster_key / annotation_key: the Leiden columns of the cohort's default clustering and of
    the annotation (default: from cohort.default_resolution and annotation.resolution).
    """
    options = config.get("report", {})
    title = title or options.get("title", "sccohort report")
    max_points = int(max_points or options.get("max_points", 50000))
    top_genes = int(top_genes or options.get("top_genes", 50))
    seed = int(config.get("seed", 0) if seed is None else seed)
    created = created or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report_dir = Path(report_path).resolve().parent
    data = load(inputs)
    default_key, default_annotation_key = cluster_key_for(config)
    data.cluster_key = cluster_key or default_key
    data.annotation_key = annotation_key or default_annotation_key
    if contrasts is None:
        contrasts = [
            {**c, "name": c.get("name") or f"{c.get('test')}_vs_{c.get('reference')}"}
            for c in config.get("de", {}).get("contrasts") or []
        ]
    warnings = qc_warnings(data)
    if inputs.merge_summary and optional_path(inputs.merge_summary) is not None:
        merge = read_tsv(inputs.merge_summary, dtype={"sample": str})
        if "dropped_by_qc" in merge:
            dropped = merge.loc[merge["dropped_by_qc"].astype(str).str.lower() == "true", "sample"].tolist()
            known = set(data.qc.loc[data.qc["dropped"], "sample"])
            for sample in dropped:
                if sample not in known:
                    warnings.append(f"Sample {sample} was not merged into the cohort (dropped by QC).")
    checks = checksums(checksum_paths or {})
    missing_inputs = checks.loc[checks["md5"] == "not found", "file"].tolist()
    if missing_inputs:
        warnings.append(f"Input file(s) no longer present, not checksummed: {', '.join(missing_inputs)}")

    qc_html = section_qc(data, inputs, sheet, report_dir, max_points, seed)
    integration_html = section_integration(data, inputs, config, max_points, seed)
    clustering_html = section_clustering(data, inputs, config, max_points, seed, warnings)
    de_html = section_de(inputs, config, contrasts, top_genes, warnings)
    summary_html = section_summary(data, inputs, sheet, config, versions or {}, checks, warnings, created)
    sections = [
        ("summary", "Run summary", summary_html),
        ("qc", "Quality control", qc_html),
        ("integration", "Integration", integration_html),
        ("clustering", "Clustering and annotation", clustering_html),
        ("de", "Differential expression", de_html),
    ]
    n_final = int(final_cells_per_sample(data.composition, data.umap).sum())
    subtitle = f"{len(data.qc)} samples, {n_final:,} cells in the final object; created {created}"
    return html.report_page(title, sections, subtitle=subtitle)
