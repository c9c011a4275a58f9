"""sccohort.de.figures: which genes are drawn as called, and every figure of a contrast is written."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
from sccohort.de import figures
from sccohort.de.test import GroupResult

CONTRAST = {"name": "trt_vs_ctrl", "factor": "condition", "test": "trt", "reference": "ctrl"}


def result_table(genes, padj, lfc) -> pd.DataFrame:
    n = len(genes)
    return pd.DataFrame(
        {
            "gene": genes,
            "baseMean": np.linspace(5, 500, n),
            "log2FoldChange": lfc,
            "lfcSE": 0.3,
            "stat": np.asarray(lfc) / 0.3,
            "pvalue": np.asarray(padj) / 2,
            "padj": padj,
        }
    )


def group_result(seed: int = 0) -> GroupResult:
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(12)]
    padj = [0.001, 0.01, 0.02, 0.2, np.nan] + [0.5] * 7
    lfc = [2.0, -1.5, 1.0, 3.0, 2.5] + list(rng.normal(0, 0.2, 7))
    samples = ["s1", "s2", "s3", "s4"]
    metadata = pd.DataFrame(
        {"sample": samples, "condition": ["ctrl", "trt", "ctrl", "trt"], "n_cells": 50},
        index=[f"{s}__T" for s in samples],
    )
    log_normalised = pd.DataFrame(rng.normal(5, 1, (4, len(genes))), index=metadata.index, columns=genes)
    return GroupResult(
        summary={"group_file": "T"},
        table=result_table(genes, padj, lfc),
        log_normalised=log_normalised,
        metadata=metadata,
    )


def test_called_genes_use_padj_below_alpha_and_the_sign_of_the_fold_change():
    table = result_table(
        ["a", "b", "c", "d", "e"], [0.01, 0.01, 0.06, np.nan, 0.04], [1.0, -1.0, 2.0, 2.0, 0.0]
    )
    up, down = figures.called_genes(table, alpha=0.05)
    assert up.tolist() == [True, False, False, False, False]
    assert down.tolist() == [False, True, False, False, False]  # lfc 0 is neither, NaN padj not called


def test_every_figure_of_a_contrast_is_written(tmp_path):
    result = group_result()
    untested = GroupResult(summary={"group_file": "B"})
    figures.plot_volcano(result.table, alpha=0.05, title="T", path=tmp_path / "T.volcano.png")
    figures.plot_ma(result.table, alpha=0.05, title="T", path=tmp_path / "T.ma.png")
    figures.plot_group_heatmap(
        result, contrast=CONTRAST, n_genes=5, title="T", path=tmp_path / "T.heatmap.png"
    )
    figures.plot_lfc_heatmap(
        {"T": result, "U": group_result(1), "B": untested},
        alpha=0.05,
        title="all",
        path=tmp_path / "all_groups.lfc_heatmap.png",
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["T.heatmap.png", "T.ma.png", "T.volcano.png", "all_groups.lfc_heatmap.png"]
    for name in written:  # complete PNGs, no temporary files left beside them
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
