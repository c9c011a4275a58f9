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


def test_log_axes_are_labelled_in_plain_text():
    """With maths parsing off, matplotlib's own log tick labels ("$\\mathdefault{10^{2}}$") would be
    drawn as those characters; plotting.log_scale labels the ticks "100", "1,000"."""
    from sccohort.plotting import log_scale, plt

    fig, ax = plt.subplots()
    ax.hist([5, 50, 500, 5000], bins=[1, 10, 100, 1000, 10000])
    log_scale(ax, "x")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert labels and not any("$" in label or "mathdefault" in label for label in labels), labels
    assert {"10", "100", "1,000"} <= set(labels), labels


def test_no_module_sets_a_log_scale_but_through_plotting():
    """set_xscale/set_yscale("log") outside plotting.log_scale would bring the mathtext labels back."""
    import re

    pattern = re.compile(r"set_[xy]scale\(\s*[\"']log")
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "scripts").rglob("*.py"))
        if path.name != "plotting.py" and pattern.search(path.read_text())
    ]
    assert not offenders, offenders
