"""Small matplotlib helpers shared by the figures of several stages."""

from __future__ import annotations

from collections.abc import Sequence


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
