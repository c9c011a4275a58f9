"""Figures of one contrast: volcano and MA plots and a heatmap per tested group, and one
heatmap of the top genes across groups. Saved with plotting.save_figure (atomic, Agg)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..plotting import plt, save_figure
from .test import GroupResult

DPI = 120
UP_COLOUR = "#c0392b"
DOWN_COLOUR = "#2e86c1"
NOT_CALLED_COLOUR = "0.7"


def called_genes(table: pd.DataFrame, *, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): boolean masks over the table's rows of genes with padj < alpha (NaN: not called)."""
    padj = table["padj"].to_numpy(dtype=float)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    significant = np.nan_to_num(padj, nan=1.0) < alpha
    return significant & (lfc > 0), significant & (lfc < 0)


def scatter_called(ax, x, y, *, up, down, label_rest: bool) -> None:
    """Genes not called in grey, up in red, down in blue (the volcano and MA plots' points)."""
    rest = ~(up | down)
    ax.scatter(
        x[rest],
        y[rest],
        s=5,
        c=NOT_CALLED_COLOUR,
        rasterized=True,
        label=f"n.s. ({rest.sum()})" if label_rest else None,
    )
    ax.scatter(x[up], y[up], s=7, c=UP_COLOUR, rasterized=True, label=f"up ({up.sum()})")
    ax.scatter(x[down], y[down], s=7, c=DOWN_COLOUR, rasterized=True, label=f"down ({down.sum()})")


def plot_volcano(table: pd.DataFrame, *, alpha: float, title: str, path, n_labels: int = 10) -> None:
    """log2 fold change vs -log10 p-value; genes with padj < alpha coloured, the top ones named."""
    up, down = called_genes(table, alpha=alpha)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    pvalue = table["pvalue"].to_numpy(dtype=float)
    y = -np.log10(np.clip(np.nan_to_num(pvalue, nan=1.0), 1e-300, 1.0))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    scatter_called(ax, lfc, y, up=up, down=down, label_rest=True)
    top = table.index[(up | down)][:n_labels]
    for i in top:
        ax.annotate(
            str(table.at[i, "gene"]), (lfc[table.index.get_loc(i)], y[table.index.get_loc(i)]), fontsize=7
        )
    ax.axvline(0, c="0.5", lw=0.5)
    ax.set_xlabel("log2 fold change")
    ax.set_ylabel("-log10 p-value")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, title=f"padj < {alpha}", title_fontsize=7)
    save_figure(fig, path, dpi=DPI)


def plot_ma(table: pd.DataFrame, *, alpha: float, title: str, path) -> None:
    """Mean normalised expression (baseMean) vs log2 fold change; genes with padj < alpha coloured."""
    up, down = called_genes(table, alpha=alpha)
    x = np.log10(table["baseMean"].to_numpy(dtype=float) + 1)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    scatter_called(ax, x, lfc, up=up, down=down, label_rest=False)
    ax.axhline(0, c="0.5", lw=0.5)
    ax.set_xlabel("log10(baseMean + 1)")
    ax.set_ylabel("log2 fold change")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, title=f"padj < {alpha}", title_fontsize=7)
    save_figure(fig, path, dpi=DPI)


def plot_group_heatmap(result: GroupResult, *, contrast: dict, n_genes: int, title: str, path) -> None:
    """Top genes (smallest p-values) x pseudobulk samples, z-scored log2 normalised counts."""
    table, meta = result.table, result.metadata
    genes = table["gene"].iloc[:n_genes].tolist()
    factor = contrast["factor"]
    order = [contrast["reference"], contrast["test"]]
    meta = meta.assign(
        _level=pd.Categorical(
            meta[factor].astype(str), categories=order + sorted(set(meta[factor].astype(str)) - set(order))
        )
    )
    meta = meta.sort_values(["_level", "sample"])
    values = result.log_normalised.loc[meta.index, genes].to_numpy().T
    sd = values.std(axis=1, keepdims=True)
    z = (values - values.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(meta) + 2.5), max(3, 0.18 * len(genes) + 1.5)))
    image = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
    ax.set_yticks(range(len(genes)), genes, fontsize=6)
    ax.set_xticks(
        range(len(meta)),
        [f"{s} ({lv})" for s, lv in zip(meta["sample"], meta["_level"], strict=True)],
        rotation=90,
        fontsize=6,
    )
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="z-score of log2 normalised counts", shrink=0.6)
    save_figure(fig, path, dpi=DPI)


def plot_lfc_heatmap(
    results: dict[str, GroupResult],
    *,
    alpha: float,
    title: str,
    path,
    per_group: int = 5,
    max_genes: int = 60,
) -> None:
    """Overview: the top genes of each tested group (by p-value, significant first) x groups, log2 fold
    change; '*' marks padj < alpha, grey means not tested in that group."""
    tested = {g: r.table.set_index("gene") for g, r in results.items() if r.table is not None}
    genes: list[str] = []
    for rank in range(per_group):
        for table in tested.values():
            if rank < len(table) and table.index[rank] not in genes and len(genes) < max_genes:
                genes.append(table.index[rank])
    groups = list(tested)
    lfc = pd.DataFrame({g: t["log2FoldChange"].reindex(genes) for g, t in tested.items()}, index=genes)
    padj = pd.DataFrame({g: t["padj"].reindex(genes) for g, t in tested.items()}, index=genes)
    limit = float(np.nanmax(np.abs(lfc.to_numpy()))) if np.isfinite(lfc.to_numpy()).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(groups) + 3), max(3, 0.18 * len(genes) + 2)))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    image = ax.imshow(
        np.ma.masked_invalid(lfc.to_numpy()),
        aspect="auto",
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
    )
    for i, j in zip(*np.nonzero(np.nan_to_num(padj.to_numpy(), nan=1.0) < alpha), strict=True):
        ax.text(j, i, "*", ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(genes)), genes, fontsize=6)
    ax.set_xticks(range(len(groups)), groups, rotation=90, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="log2 fold change", shrink=0.6)
    save_figure(fig, path, dpi=DPI)
