"""The figures the report draws itself, from the stages' tables, as inline PNG data URIs.

UMAPs go through plotting.scatter_categorical and colours through plotting.palette, like every
stage's figures; the stages' own PNGs (dot plots, composition, DE plots) are embedded as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..pages import file_data_uri
from ..plotting import (  # plt: the shared set-up
    figure_data_uri,
    log_scale,
    plt,
    scatter_categorical,
    short_label,
)
from .data import optional_path

# (column of cells.tsv.gz, axis label, log scale) of the QC panel's rows.
QC_METRICS = (
    ("total_counts", "total counts", True),
    ("n_genes_by_counts", "genes detected", True),
    ("pct_counts_mt", "% mitochondrial", False),
    # doublets.method consensus (default): the consensus rank; scrublet: Scrublet's own score
    ("doublet_score", "doublet score", False),
)
# The QC categories of a barcode, in drawing order: failed barcodes behind the kept cells,
# doublets on top.
QC_COLOURS = {"failed QC": "#9a9a9a", "kept": "#2a9d58", "doublet": "#e07b00"}
THRESHOLD_COLOUR = "#d62728"
FIGURE_DPI = 90


def figure_uri(fig) -> str:
    """A figure the report drew, as an inline PNG (closed afterwards)."""
    return figure_data_uri(fig, dpi=FIGURE_DPI)


def stage_figure_uri(path) -> str | None:
    """A stage's PNG as an inline data URI, or None when that optional figure is absent."""
    found = optional_path(path)
    return file_data_uri(found) if found is not None else None


def subsample(frame: pd.DataFrame, max_points: int, seed: int) -> pd.DataFrame:
    """At most `max_points` rows, drawn at random with `seed`, in a random (seeded) order so
    that no group is systematically drawn on top of another."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    take = (
        rng.choice(n, size=min(n, int(max_points)), replace=False) if n > max_points else rng.permutation(n)
    )
    return frame.iloc[take]


def plot_umap_grid(
    panels: Sequence[tuple[str, pd.DataFrame, str]],
    colours: Mapping[str, dict],
    ncols: int = 2,
    legend: Mapping[str, str] | None = None,
):
    """UMAP panels: each (title, table with UMAP1/UMAP2 and the colour column, colour column),
    coloured by colours[column]; legend[column]: "right" (default), "centroids" or "none"."""
    legend = legend or {}
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 4.6 * nrows), squeeze=False)
    for ax, (title, frame, key) in zip(axes.ravel(), panels, strict=False):
        scatter_categorical(
            ax,
            frame[["UMAP1", "UMAP2"]].to_numpy(),
            frame[key].astype(str).to_numpy(),
            colours=colours[key],
            title=title,
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
    for i, sample in enumerate(samples):
        frame = subsample(cells[sample], per_sample, seed + i)
        category = np.where(frame["pass"], "kept", np.where(frame["qc_pass"], "doublet", "failed QC"))
        jitter = i + rng.uniform(-0.32, 0.32, len(frame))
        for ax, (metric, _, _) in zip(axes, QC_METRICS, strict=True):
            if metric in frame:
                _qc_column(ax, i, jitter, frame[metric], category, _limits(thresholds[sample], metric))
    for ax, (_, label, on_log_axis) in zip(axes, QC_METRICS, strict=True):
        if on_log_axis:
            log_scale(ax, "y")
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", color="#eee")
    axes[-1].set_xticks(range(len(samples)))
    axes[-1].set_xticklabels(
        [short_label(s, 24) for s in samples],
        rotation=45 if len(samples) > 4 else 0,
        ha="right" if len(samples) > 4 else "center",
        fontsize=8,
    )
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=n) for n, c in QC_COLOURS.items()]
    handles += [
        Line2D([], [], color=THRESHOLD_COLOUR, ls="--", label="lower threshold"),
        Line2D([], [], color=THRESHOLD_COLOUR, ls="-", label="upper threshold"),
    ]
    axes[0].legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0, 1.02), ncol=5, fontsize=7, frameon=False
    )
    fig.tight_layout()
    return fig


def _limits(info: dict, metric: str) -> dict:
    """{"lower"/"upper": threshold} of one sample's metric (the doublet row: the score above which
    cells were called doublets)."""
    if metric == "doublet_score":
        return {"upper": info.get("doublets", {}).get("threshold")}
    qc = info.get("qc", {})
    return {b: qc.get(metric, {}).get(b) for b in ("lower", "upper")}


def _qc_column(ax, i: int, jitter, values, category, limits: dict) -> None:
    """One sample's barcodes at x = i (jittered) and its thresholds as bars across them."""
    values = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    for name, colour in QC_COLOURS.items():
        members = (category == name) & np.isfinite(values)
        ax.scatter(jitter[members], values[members], s=1.5, c=colour, linewidths=0, rasterized=True)
    for bound, limit in limits.items():
        if limit is not None:
            ax.hlines(
                limit,
                i - 0.42,
                i + 0.42,
                colors=THRESHOLD_COLOUR,
                linewidth=1.8,
                linestyles="--" if bound == "lower" else "-",
            )


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
        (kept, "kept", QC_COLOURS["kept"]),
        (doublets_removed, "removed: doublet", QC_COLOURS["doublet"]),
        (failed, "removed: failed QC", QC_COLOURS["failed QC"]),
    ):
        ax.barh(y, values, left=left, color=colour, label=name)
        left += values
    ax.set_yticks(y)
    ax.set_yticklabels([short_label(s, 24) for s in samples], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("barcodes", fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def plot_cluster_sizes(
    counts: pd.DataFrame, colours: Mapping[str, str], *, labels: Mapping[str, str] | None = None
):
    """Cells per cluster, stacked by sample (counts: clusters x samples; colours: per sample);
    `labels` (cluster -> cell type) go under the cluster ids."""
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(counts) + 3.5), 3.8))
    bottom = np.zeros(len(counts))
    x = np.arange(len(counts))
    for sample in counts.columns:
        values = counts[sample].to_numpy()
        ax.bar(x, values, bottom=bottom, color=colours[sample], label=short_label(sample, 24), width=0.8)
        bottom += values
    ax.set_xticks(x)
    labels = labels or {}
    names = [f"{c} {short_label(str(labels[c]), 18)}" if labels.get(c) else str(c) for c in counts.index]
    ax.set_xticklabels(names, fontsize=7, rotation=60 if labels else 0, ha="right" if labels else "center")
    ax.set_xlabel("cluster (cell type)" if labels else "cluster", fontsize=8)
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
