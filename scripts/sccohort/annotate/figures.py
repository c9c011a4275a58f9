"""The annotation figures: UMAP by label, marker dot plot by assigned type, composition bars.

Colours come from plotting.palette over each label column's categories, the colours that
annotate_cells stores in uns["<key>_colors"], so a type has the same colour in every figure, in
the h5ad and in scanpy's own plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plotting
from .marker_table import label_order
from .scores import column_block

DPI = 150


def plot_umap_labels(
    adata,
    *,
    keys: Sequence[str],
    path: str | Path,
    basis: str = "X_umap",
    max_points: int = 200_000,
    seed: int = 0,
) -> None:
    """One UMAP panel per label column of `keys` present in obs (at most `max_points` cells, drawn
    in a seeded random order; legend beside each panel), saved atomically as PNG."""
    plt = plotting.plt

    keys = [k for k in keys if k in adata.obs]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5.5), squeeze=False)
    if basis not in adata.obsm:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, f"no {basis} in the object", ha="center", va="center")
            ax.set_axis_off()
    else:
        coords = np.asarray(adata.obsm[basis])[:, :2]
        order = np.random.default_rng(seed).permutation(adata.n_obs)[:max_points]
        for ax, key in zip(axes.ravel(), keys, strict=False):
            # colours: plotting.palette over the column's categories (scatter_categorical's default)
            plotting.scatter_categorical(ax, coords, adata.obs[key], title=key, order=order)
    plotting.save_figure(fig, path, dpi=DPI)


def dotplot_genes(
    adata, markers: pd.DataFrame, *, label_key: str = "cell_type", per_type: int = 4
) -> dict[str, list[str]]:
    """Up to `per_type` positive markers (found in the data, each gene once) per assigned type:
    highest weight first, then highest mean expression in that type."""
    labels = adata.obs[label_key].astype(str)
    chosen: dict[str, list[str]] = {}
    used: set[str] = set()
    positives = markers.loc[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
    for cell_type in label_order(markers, labels.unique()):
        table = positives.loc[positives["cell_type"] == cell_type]
        members = (labels == cell_type).to_numpy()
        if table.empty or not members.any():
            continue
        columns = adata.var_names.get_indexer(table["gene"])
        mean = np.asarray(column_block(adata.X[members], columns).mean(axis=0)).ravel()
        table = table.assign(_mean=mean).sort_values(["weight", "_mean"], ascending=False)
        genes = [g for g in table["gene"] if g not in used][:per_type]
        used.update(genes)
        if genes:
            chosen[cell_type] = genes
    return chosen


def plot_marker_dotplot(
    adata, markers: pd.DataFrame, *, path: str | Path, label_key: str = "cell_type"
) -> None:
    """Dot plot of the marker genes of each assigned type (dotplot_genes), by assigned type,
    saved atomically as PNG."""
    plotting.save_dotplot(
        adata,
        dotplot_genes(adata, markers, label_key=label_key),
        label_key,
        path,
        empty_message="no cell type assigned: no marker dot plot",
        title="Marker genes by assigned cell type",
    )


def plot_composition(per_sample: pd.DataFrame, per_condition: pd.DataFrame, *, path: str | Path) -> None:
    """Stacked bars of cell-type fractions: one bar per sample (grouped by condition) and one per
    condition (mean of its samples' fractions), saved atomically as PNG."""
    plt = plotting.plt

    order = list(dict.fromkeys(per_sample["cell_type"]))
    colours = plotting.palette(order)
    wide = per_sample.pivot(index="sample", columns="cell_type", values="fraction").reindex(columns=order)
    sample_condition = per_sample.drop_duplicates("sample").set_index("sample")["condition"]
    wide = wide.loc[list(sample_condition.sort_values(kind="stable").index)]
    cond = per_condition.pivot(index="condition", columns="cell_type", values="mean_sample_fraction").reindex(
        columns=order
    )
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(4 + 0.45 * len(wide) + 0.6 * len(cond), 5),
        gridspec_kw={"width_ratios": [max(len(wide), 1), max(len(cond), 1) + 1]},
    )
    for ax, frame, title in (
        (axes[0], wide, "per sample"),
        (axes[1], cond, "per condition (mean of samples)"),
    ):
        bottom = np.zeros(len(frame))
        for cell_type in order:
            values = frame[cell_type].fillna(0).to_numpy()
            ax.bar(
                range(len(frame)), values, bottom=bottom, color=colours[cell_type], label=cell_type, width=0.8
            )
            bottom += values
        ax.set_xticks(range(len(frame)))
        labels = (
            [f"{s}\n({sample_condition[s]})" for s in frame.index] if frame is wide else list(frame.index)
        )
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of cells")
        ax.set_title(title, fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    axes[1].legend(
        handles[::-1], names[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False
    )
    plotting.save_figure(fig, path, dpi=DPI)
