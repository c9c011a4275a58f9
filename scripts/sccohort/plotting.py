"""Plotting shared by every stage: one palette, one categorical scatter, one atomic save, and
labels drawn as written (matplotlib's maths parsing of "$...$" is off for the whole process).

The palette is scanpy's default for categoricals (``scanpy.plotting.palettes``: 20, 28 or 102
colours by the number of categories) with `Unknown` in light grey, and `store_colours` writes it
to ``uns["<key>_colors"]`` in category order, so the report, the h5ad and scanpy's own
``sc.pl.umap`` show a label in the same colour.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# Labels are user strings (sample, condition, donor, cell-type and gene names) shown as written: with
# maths parsing on, matplotlib reads "$...$" in a label as mathtext and a name such as "IL-2$^hi"
# or "$\\undefined$" fails at savefig. Every stage's figures import this module before drawing.
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .names import UNKNOWN, colours_key  # noqa: E402

UNKNOWN_COLOUR = "#cccccc"
MISSING_COLOUR = "#cccccc"


def palette(labels: Sequence[str]) -> dict[str, str]:
    """Colour per label in the given order: scanpy's default categorical palette, Unknown grey.

    The colours are those ``sc.pl.umap`` would pick for a categorical with these categories (the
    i-th category takes the i-th colour), so a stored palette and scanpy's agree.
    """
    from scanpy.plotting import palettes

    labels = [str(label) for label in labels]
    n = len(labels)
    if n <= 20:
        base = palettes.default_20
    elif n <= 28:
        base = palettes.default_28
    else:
        base = palettes.default_102
    colours = {}
    for i, label in enumerate(labels):
        colours[label] = UNKNOWN_COLOUR if label == UNKNOWN else matplotlib.colors.to_hex(base[i % len(base)])
    return colours


def categories(values) -> list[str]:
    """The categories of a label column in their order (sorted values for a non-categorical)."""
    values = pd.Series(values)
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories]
    return sorted(values.dropna().astype(str).unique())


def natural_order(values) -> list[str]:
    """Unique values as strings, numbers numerically first (cluster ids 0, 1, 2, ..., 10), then
    the rest alphabetically: the order in which the report lists and colours a categorical."""
    import re

    def is_number(value: str) -> bool:
        return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))

    unique = list(dict.fromkeys(str(v) for v in pd.Series(values).dropna()))
    return sorted(unique, key=lambda v: (0, float(v), "") if is_number(v) else (1, 0.0, v))


def store_colours(adata, key: str) -> dict[str, str]:
    """Write the palette of categorical ``obs[key]`` to ``uns["<key>_colors"]`` and return it.

    Writes: ``obs[key]`` becomes categorical (if it was not) and ``uns[f"{key}_colors"]`` a list
    of hex colours, one per category in order, as scanpy stores them.
    """
    if not isinstance(adata.obs[key].dtype, pd.CategoricalDtype):
        adata.obs[key] = pd.Categorical(adata.obs[key].astype(str), categories=categories(adata.obs[key]))
    colours = palette(categories(adata.obs[key]))
    adata.uns[colours_key(key)] = list(colours.values())
    return colours


def point_size(n: int) -> float:
    """Marker size for a scatter of `n` cells: large for a few hundred, small for a million."""
    return float(np.clip(40000 / max(n, 1), 0.4, 12))


def point_legend(ax, entries: Sequence[tuple[str, object]], single_column_max: int = 16) -> None:
    """A legend of coloured dots (label, colour) to the right of a scatter plot's axes.

    Scatter plots of many cells are drawn with one call per plot, so there are no per-category
    artists to build a legend from; proxy markers stand in for them.
    """
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=5, color=colour, label=label)
        for label, colour in entries
    ]
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        frameon=False,
        ncol=1 if len(entries) <= single_column_max else 2,
    )


def short_label(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "\u2026"


def scatter_categorical(
    ax,
    coords: np.ndarray,
    labels,
    *,
    colours: Mapping[str, str] | None = None,
    title: str = "",
    legend: str = "right",
    order: np.ndarray | None = None,
    axis_labels: tuple[str, str] | None = ("UMAP 1", "UMAP 2"),
) -> None:
    """Cells at `coords` (n x 2) coloured by `labels`, drawn in `order` (a fixed random order, so
    no group is drawn on top of the others; default: as given).

    colours: label -> colour (default: `palette` of the labels' categories); a label without a
    colour is drawn grey. legend: "right" (dots beside the axes; centroid labels past 40 groups),
    "centroids" (each label written at its group's median) or "none".
    """
    coords = np.asarray(coords)[:, :2]
    values = pd.Series(labels)
    if colours is None:
        colours = palette(categories(values))
    values = values.astype(str).to_numpy()
    if order is None:
        order = np.arange(len(values))
    ax.scatter(
        coords[order, 0],
        coords[order, 1],
        c=[colours.get(v, MISSING_COLOUR) for v in values[order]],
        s=point_size(len(order)),
        linewidths=0,
        rasterized=True,
    )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if axis_labels:
        ax.set_xlabel(axis_labels[0], fontsize=8)
        ax.set_ylabel(axis_labels[1], fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    present = [label for label in colours if (values == label).any()]
    if legend == "centroids" or (legend == "right" and len(present) > 40):
        for label in present:
            if label == UNKNOWN:
                continue
            members = values == label
            ax.text(
                np.median(coords[members, 0]),
                np.median(coords[members, 1]),
                label,
                fontsize=8,
                weight="bold",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.6},
            )
    elif legend == "right":
        point_legend(ax, [(short_label(label), colours[label]) for label in present], single_column_max=18)


def plain_number(value: float, _position=None) -> str:
    """A tick value as plain text: "100", "10,000", "0.01"."""
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:g}"


def log_scale(ax, axis: str = "y") -> None:
    """Put `ax`'s x or y axis on a log scale with plain-text tick labels ("100", "1,000").

    Why not ax.set_yscale("log") alone: matplotlib writes log ticks as mathtext ("$10^{2}$"),
    which is drawn as those raw characters here, where maths parsing is off (see above)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(plain_number))
    target.set_minor_formatter(NullFormatter())


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110, tight: bool = True) -> None:
    """Save `fig` to `path` atomically (a temporary name, renamed when complete) and close it.

    The format follows the file's suffix (png by default).
    """
    from .runtime import atomic_path

    if tight:
        fig.tight_layout()
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, bbox_inches="tight")
    plt.close(fig)


def figure_data_uri(fig, *, dpi: int = 110) -> str:
    """Render a matplotlib figure as an inline PNG data URI (for self-contained HTML) and close it."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def save_dotplot(
    adata, genes: Mapping[str, Sequence[str]], groupby: str, path, *, empty_message: str, **options
) -> None:
    """scanpy's dot plot of `genes` (group label -> genes) by ``obs[groupby]``, scaled per gene,
    saved atomically to `path`; a figure saying `empty_message` when there is no gene to show.

    `options` go to ``sc.pl.dotplot`` (e.g. ``title``, ``colorbar_title``).
    """
    import scanpy as sc

    from .runtime import atomic_path

    if not genes:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, empty_message, ha="center", va="center")
        ax.set_axis_off()
        save_figure(fig, path, tight=False)
        return
    plot = sc.pl.dotplot(
        adata,
        var_names=dict(genes),
        groupby=groupby,
        standard_scale="var",
        use_raw=False,
        show=False,
        return_fig=True,
        **options,
    )
    with atomic_path(path) as tmp:
        plot.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close("all")
