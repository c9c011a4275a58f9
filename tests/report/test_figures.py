"""The report's own figures (sccohort.report.figures): subsampling, UMAPs in the shared palette,
stage figures inlined as they are."""

from __future__ import annotations

import base64

import matplotlib.colors
import numpy as np
import pandas as pd
from report.synthetic import write_png
from sccohort.plotting import palette
from sccohort.report import figures


def test_subsample_is_seeded_and_bounded():
    frame = pd.DataFrame({"x": np.arange(5000)})
    a, b = figures.subsample(frame, 1000, seed=3), figures.subsample(frame, 1000, seed=3)
    c = figures.subsample(frame, 1000, seed=4)
    assert len(a) == 1000 and a["x"].is_unique
    assert a["x"].tolist() == b["x"].tolist()
    assert a["x"].tolist() != c["x"].tolist()
    small = figures.subsample(frame.head(10), 1000, seed=3)
    assert sorted(small["x"]) == list(range(10))


def test_umap_grid_draws_each_label_in_the_shared_palette():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "UMAP1": rng.normal(size=60),
            "UMAP2": rng.normal(size=60),
            "cell_type": np.repeat(["B", "T", "Unknown"], 20),
        }
    )
    colours = {"cell_type": palette(["B", "T", "Unknown"])}
    fig = figures.plot_umap_grid([("cell type", frame, "cell_type")], colours, ncols=1)
    drawn = fig.axes[0].collections[0].get_facecolors()
    expected = [matplotlib.colors.to_rgba(colours["cell_type"][label]) for label in frame["cell_type"]]
    assert np.allclose(drawn, expected)
    assert colours["cell_type"]["Unknown"] == "#cccccc"
    uri = figures.figure_uri(fig)
    assert uri.startswith("data:image/png;base64,")


def test_stage_figures_are_inlined_byte_for_byte_or_none(tmp_path):
    png = tmp_path / "figures" / "T.volcano.png"
    write_png(png, "volcano")
    uri = figures.stage_figure_uri(png)
    assert base64.b64decode(uri.removeprefix("data:image/png;base64,")) == png.read_bytes()
    assert figures.stage_figure_uri(tmp_path / "absent.png") is None
    assert figures.stage_figure_uri(None) is None
