"""Figures of one sample's QC page: metric distributions (and the damaged-cell call against the
cells' neighbours, its thresholds drawn), the doublet scores with the call threshold, cells removed.

Each function returns a matplotlib figure; page.qc_report_sample saves them with
plotting.save_figure (which lays them out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plotting import log_scale, plt  # plt: the shared set-up, Agg, labels drawn as written

DISTRIBUTIONS = (
    ("total_counts", "Total counts per cell", True),
    ("n_genes_by_counts", "Genes detected per cell", True),
    ("pct_counts_mt", "% mitochondrial counts", False),
)


def plot_distributions(cells: pd.DataFrame, thresholds: dict):
    """Histograms of each metric before (all barcodes) and after (kept cells), thresholds drawn;
    with the neighbourhood damage call (thresholds["damaged"]) a fourth panel draws it."""
    damage = thresholds.get("damaged", {})
    with_damage = "n_mads_mt" in damage and "damage_z_mt" in cells
    fig, axes = plt.subplots(1, len(DISTRIBUTIONS) + with_damage, figsize=(13 + 4 * with_damage, 3.6))
    if with_damage:
        plot_damage(axes[-1], cells, damage)
    for ax, (metric, label, on_log_axis) in zip(axes, DISTRIBUTIONS, strict=False):
        values = cells[metric].astype(float)
        if values.notna().sum() == 0:
            ax.text(0.5, 0.5, "not computed\n(no genes of this class)", ha="center", va="center")
            ax.set_title(label)
            continue
        finite = values.dropna()
        if on_log_axis:
            finite = finite[finite > 0]
            bins = np.logspace(np.log10(max(finite.min(), 1)), np.log10(finite.max() + 1), 60)
            log_scale(ax, "x")
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


def plot_damage(ax, cells: pd.DataFrame, damage: dict) -> None:
    """Mito log-odds above the neighbours' median against the non-mito count deficit (both in
    MADs), damaged cells in red, the call's thresholds drawn (both above n_mads_mt, or the mito
    excess alone above n_mads_mt_alone)."""
    z_counts = cells["damage_z_counts"].astype(float)
    z_mt = cells["damage_z_mt"].astype(float)
    shown = z_counts.notna() & z_mt.notna()
    damaged = cells["fail_reason"].fillna("").astype(str).str.contains("damaged") & shown
    ax.scatter(z_counts[shown & ~damaged], z_mt[shown & ~damaged], s=3, color="#888", label="judged")
    ax.scatter(z_counts[damaged], z_mt[damaged], s=5, color="#c22", label=f"damaged (n={int(damaged.sum())})")
    joint, alone = float(damage["n_mads_mt"]), float(damage["n_mads_mt_alone"])
    right = max(float(z_counts[shown].max()) if shown.any() else joint, joint) + 1
    ax.plot([joint, right], [joint, joint], color="#c22", linestyle="--", label=f"both > {joint:g} MADs")
    ax.plot([joint, joint], [joint, alone], color="#c22", linestyle="--")
    ax.axhline(alone, color="#c22", linestyle=":", label=f"mito alone > {alone:g} MADs")
    ax.set_xlabel("non-mito counts below neighbours (MADs)")
    ax.set_ylabel("mito log-odds above neighbours (MADs)")
    ax.set_title("Damaged cells (vs. neighbours)")
    ax.legend(fontsize=7)


def plot_doublet_scores(cells: pd.DataFrame, doublets: dict):
    """The doublet score with the call threshold, and Scrublet's observed and simulated scores.

    method consensus: the left panel is the consensus score (a rank in [0, 1]) and its call
    threshold, the right one Scrublet's scores with Scrublet's own threshold; method scrublet:
    Scrublet's observed and simulated scores, the threshold used on both."""
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
    consensus = doublets.get("method") == "consensus"
    axes[0].hist(observed, bins=bins, color="#48a")
    axes[0].set_title("Consensus doublet score" if consensus else "Observed transcriptomes")
    axes[0].set_xlabel("doublet score (consensus rank)" if consensus else "Scrublet doublet score")
    if histogram:
        edges = np.asarray(histogram["edges"])
        axes[1].stairs(
            histogram["counts"], edges, fill=True, color="#a64", alpha=0.6, label="simulated doublets"
        )
    if consensus and "doublet_score_scrublet" in cells:
        scrublet = cells["doublet_score_scrublet"].dropna().astype(float)
        axes[1].hist(scrublet, bins=bins, histtype="step", color="#48a", label="observed cells")
    axes[1].set_title("Scrublet: observed and simulated" if consensus else "Simulated doublets")
    axes[1].set_xlabel("Scrublet doublet score")
    scrublet_threshold = (
        doublets.get("scrublet", {}).get("threshold") if consensus else doublets.get("threshold")
    )
    for ax, limit, name in (
        (axes[0], doublets.get("threshold"), "call threshold"),
        (axes[1], scrublet_threshold, "Scrublet threshold" if consensus else "threshold"),
    ):
        if limit is not None and np.isfinite(limit):
            ax.axvline(limit, color="#c22", linestyle="--", label=f"{name} {limit:.3f}")
        log_scale(ax, "y")
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
