"""Figures of the cross-sample QC summary: the same panels for every sample, side by side."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..names import REMOVAL_REASONS
from ..plotting import plt  # the shared set-up: Agg, labels drawn as written

PANELS = (
    ("total_counts", "total counts per cell", True),
    ("n_genes_by_counts", "genes detected per cell", True),
    ("pct_counts_mt", "% mitochondrial counts", False),
)
# Violins are drawn from at most this many cells per sample (the seed keeps the figure stable).
MAX_CELLS = 5000
SEVERAL = "several reasons"
# One colour per removal reason (names.REMOVAL_REASONS order), none of them the green of "kept".
REASON_COLOURS = ("#f0a020", "#c0392b", "#8e44ad", "#e84393", "#2c6fbb", "#d35400", "#6d4c41", "#a0a0a0")


def _values(cells: pd.DataFrame, metric: str, log_scale: bool) -> np.ndarray:
    values = cells[metric].astype(float).dropna().to_numpy()
    if len(values) > MAX_CELLS:
        values = np.random.default_rng(0).choice(values, MAX_CELLS, replace=False)
    return np.log10(values + 1) if log_scale else values


def plot_metric_panels(cells: Mapping[str, pd.DataFrame], records: Mapping[str, Mapping]):
    """One row per metric, one violin per sample (all barcodes), each sample's lower and upper
    thresholds as short red lines over its violin (dashed: lower, dotted: upper)."""
    samples = list(cells)
    width = min(40.0, max(8.0, 0.55 * len(samples) + 2.5))
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(width, 2.6 * len(PANELS)), sharex=True)
    positions = np.arange(1, len(samples) + 1)
    for ax, (metric, label, log_scale) in zip(axes, PANELS, strict=True):
        data = [_values(cells[s], metric, log_scale) for s in samples]
        drawn = [(p, d) for p, d in zip(positions, data, strict=True) if len(d) > 1 and np.ptp(d) > 0]
        if drawn:
            parts = ax.violinplot([d for _, d in drawn], positions=[p for p, _ in drawn], showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor("#7a9cc6")
                body.set_alpha(0.7)
        for position, sample in zip(positions, samples, strict=True):
            entry = records[sample].get("qc", {}).get(metric, {})
            for bound, style in (("lower", "--"), ("upper", ":")):
                limit = entry.get(bound)
                if limit is None:
                    continue
                y = np.log10(limit + 1) if log_scale else limit
                ax.hlines(y, position - 0.4, position + 0.4, colors="#c22", linestyles=style, linewidth=1.4)
        ax.set_ylabel(f"log10({label} + 1)" if log_scale else label, fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1].set_xticks(positions, samples, rotation=60 if len(samples) > 6 else 0, ha="right", fontsize=8)
    fig.suptitle(
        "QC metrics per sample (all barcodes); red: thresholds (dashed lower, dotted upper)", fontsize=9
    )
    return fig


def exclusive_removals(cells: pd.DataFrame) -> pd.Series:
    """Each cell in one category: kept, the one reason it failed, or several reasons."""
    reasons = cells["fail_reason"].fillna("").astype(str)
    category = np.where(reasons == "", "kept", np.where(reasons.str.contains(";"), SEVERAL, reasons))
    return pd.Series(category).value_counts()


def plot_kept_removed(cells: Mapping[str, pd.DataFrame]):
    """Stacked bars per sample: % of input cells kept, removed for one reason only, or for several."""
    samples = list(cells)
    order = ["kept", *REMOVAL_REASONS, SEVERAL]
    shares = pd.DataFrame({s: exclusive_removals(c) for s, c in cells.items()}).T.reindex(columns=order)
    shares = shares.fillna(0)
    shares = 100 * shares.div(shares.sum(axis=1).replace(0, 1), axis=0)
    shares = shares.loc[:, (shares > 0).any(axis=0)]
    colours = dict(zip(order, ["#2a6", *REASON_COLOURS, "#333"], strict=True))
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(samples) + 1.6))
    left = np.zeros(len(samples))
    for category in shares.columns:
        ax.barh(samples, shares[category], left=left, color=colours[category], label=category)
        left += shares[category].to_numpy()
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of input cells")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("Cells kept and removed per sample (each cell counted once)", fontsize=9)
    return fig
