"""Figures of one sample's QC page: metric distributions, Scrublet's scores, cells removed.

Each function returns a matplotlib figure; page.qc_report_sample saves them with
plotting.save_figure (which lays them out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plotting import plt  # the shared set-up: Agg, labels drawn as written

DISTRIBUTIONS = (
    ("total_counts", "Total counts per cell", True),
    ("n_genes_by_counts", "Genes detected per cell", True),
    ("pct_counts_mt", "% mitochondrial counts", False),
)


def plot_distributions(cells: pd.DataFrame, thresholds: dict):
    """Histograms of each metric before (all barcodes) and after (kept cells), thresholds drawn."""
    fig, axes = plt.subplots(1, len(DISTRIBUTIONS), figsize=(13, 3.6))
    for ax, (metric, label, log_scale) in zip(axes, DISTRIBUTIONS, strict=True):
        values = cells[metric].astype(float)
        if values.notna().sum() == 0:
            ax.text(0.5, 0.5, "not computed\n(no genes of this class)", ha="center", va="center")
            ax.set_title(label)
            continue
        finite = values.dropna()
        if log_scale:
            finite = finite[finite > 0]
            bins = np.logspace(np.log10(max(finite.min(), 1)), np.log10(finite.max() + 1), 60)
            ax.set_xscale("log")
        else:
            bins = np.linspace(0, max(finite.max(), 1), 60)
        ax.hist(finite, bins=bins, color="#bbb", label=f"before QC (n={len(cells)})")
        kept = cells.loc[cells["pass"].astype(bool), metric].dropna()
        ax.hist(kept, bins=bins, color="#2a6", alpha=0.8, label=f"kept (n={len(kept)})")
        for bound, style in (("lower", "--"), ("upper", ":")):
            limit = thresholds.get(metric, {}).get(bound)
            if limit is not None:
                ax.axvline(limit, color="#c22", linestyle=style, label=f"{bound} {limit:.4g}")
        ax.set_title(label)
        ax.set_ylabel("cells")
        ax.legend(fontsize=7)
    return fig


def plot_doublet_scores(cells: pd.DataFrame, doublets: dict):
    """Scrublet: observed and simulated score histograms with the threshold used."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    observed = cells["doublet_score"].dropna().astype(float)
    if doublets.get("skipped") or observed.empty:
        for ax in axes:
            ax.text(
                0.5, 0.5, doublets.get("skipped", "no doublet scores"), ha="center", va="center", wrap=True
            )
            ax.set_axis_off()
        return fig
    histogram = doublets.get("simulated_histogram", {})
    bins = np.linspace(0, 1, 51)
    axes[0].hist(observed, bins=bins, color="#48a")
    axes[0].set_yscale("log")
    axes[0].set_title("Observed transcriptomes")
    if histogram:
        edges = np.asarray(histogram["edges"])
        axes[1].stairs(histogram["counts"], edges, fill=True, color="#a64")
    axes[1].set_yscale("log")
    axes[1].set_title("Simulated doublets")
    for ax in axes:
        ax.axvline(
            doublets["threshold"],
            color="#c22",
            linestyle="--",
            label=f"threshold {doublets['threshold']:.3f}",
        )
        ax.set_xlabel("Scrublet doublet score")
        ax.set_ylabel("count")
        ax.legend(fontsize=7)
    return fig


def plot_removed(counts: pd.DataFrame):
    """Bars of cells kept and removed by each reason (`counts`: page.removal_counts)."""
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(counts) + 1))
    colours = ["#2a6" if c == "kept" else "#c55" for c in counts["category"]]
    ax.barh(counts["category"], counts["cells"], color=colours)
    for y, value in enumerate(counts["cells"]):
        ax.text(value, y, f" {value}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cells")
    ax.set_title("Cells kept and removed by reason")
    return fig
