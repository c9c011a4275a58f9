"""Shared plotting: user strings are drawn as written, in every stage's figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import REPO

# Labels matplotlib's mathtext cannot parse (ValueError at savefig with maths parsing on).
LABELS = ["IL-2$^$ T", "$\\undefined$ cells", "cost $5 and $6"]


def test_dollar_labels_are_drawn_as_text(tmp_path):
    from sccohort import plotting

    fig, axes = plotting.plt.subplots(1, 2)
    coords = np.random.default_rng(0).normal(size=(30, 2))
    plotting.scatter_categorical(axes[0], coords, pd.Series(LABELS * 10), title=LABELS[0])
    plotting.scatter_categorical(axes[1], coords, pd.Series(LABELS * 10), legend="centroids")
    plotting.save_figure(fig, tmp_path / "dollars.png")
    assert (tmp_path / "dollars.png").stat().st_size > 1000


def test_every_figure_is_drawn_through_sccohort_plotting():
    """No module but sccohort.plotting imports matplotlib.pyplot (or sets rcParams): every stage's
    figures take `plt` from sccohort.plotting, so its set-up (maths parsing off) is in force when
    they draw."""
    import ast

    offenders = []
    for path in sorted((REPO / "scripts").rglob("*.py")):
        if path == REPO / "scripts" / "sccohort" / "plotting.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Attribute) and node.attr in ("rcParams", "rc"):
                names = ["matplotlib.rcParams"]
            else:
                continue
            if any(
                n.startswith(("matplotlib.pyplot", "matplotlib.rcParams", "matplotlib.use")) for n in names
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"import plt from sccohort.plotting instead: {offenders}"
