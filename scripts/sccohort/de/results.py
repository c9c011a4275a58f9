"""What the DE stage writes: one folder per contrast (a table per tested group, the figures,
the contrast's summary) and the summary of every group x contrast; the entry functions of
rules de_contrast and de_summary."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..runtime import read_table, write_table
from .pseudobulk import read_pseudobulk
from .test import DESettings, GroupResult, run_contrast


def de_contrast(
    *,
    counts: str,
    metadata: str,
    output: str,
    contrast: dict,
    de_options: dict,
    threads: int = 1,
    log: logging.Logger,
) -> None:
    """Rule de_contrast: the test of de.method per group for one contrast (name, factor, test,
    reference) on the pseudobulk `counts` and `metadata` files; writes the folder `output` (write_contrast).

    `de_options` is the config's de: block. InputError when no group can be tested.
    """
    settings = DESettings.from_config(de_options)
    log.info(
        "contrast %s: %s %s vs %s; design %s",
        contrast["name"],
        contrast["factor"],
        contrast["test"],
        contrast["reference"],
        settings.design,
    )
    counts_table, metadata_table = read_pseudobulk(counts, metadata)
    results, summary = run_contrast(
        counts_table, metadata_table, contrast=contrast, settings=settings, threads=threads, log=log
    )
    write_contrast(results, summary, contrast=contrast, settings=settings, outdir=output)


def write_contrast(
    results: dict[str, GroupResult], summary: pd.DataFrame, *, contrast: dict, settings: DESettings, outdir
) -> None:
    """Write one contrast's folder: <group_file>.tsv per tested group, summary.tsv, and figures/
    (<group_file>.volcano.png, .ma.png, .heatmap.png per tested group; all_groups.lfc_heatmap.png)."""
    # matplotlib loads here, not when the DAG-time checks import the package
    from . import figures

    outdir = Path(outdir)
    folder = outdir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    label = f"{contrast['factor']}: {contrast['test']} vs {contrast['reference']}"
    for group, result in results.items():
        if result.table is None:
            continue
        name = result.summary["group_file"]
        write_table(result.table, outdir / f"{name}.tsv")
        title = f"{group} - {label} ({settings.design})"
        figures.plot_volcano(
            result.table, alpha=settings.alpha, title=title, path=folder / f"{name}.volcano.png"
        )
        figures.plot_ma(result.table, alpha=settings.alpha, title=title, path=folder / f"{name}.ma.png")
        figures.plot_group_heatmap(
            result,
            contrast=contrast,
            n_genes=settings.heatmap_genes,
            title=title,
            path=folder / f"{name}.heatmap.png",
        )
    figures.plot_lfc_heatmap(
        results,
        alpha=settings.alpha,
        title=f"Top genes per {settings.group_by} - {label}",
        path=folder / "all_groups.lfc_heatmap.png",
    )
    write_table(summary, outdir / "summary.tsv")


def de_summary(*, contrast_folders: Sequence[str], output: str, log: logging.Logger) -> None:
    """Rule de_summary: one table of every group x contrast, tested or skipped (with the reason):
    the summary.tsv of each contrast folder, one after the other, written to `output`."""
    summary = combine_summaries(contrast_folders)
    for status, n in summary["status"].value_counts().items():
        log.info("%s: %d group x contrast pairs", status, n)
    write_table(summary, output)


def combine_summaries(contrast_folders: Sequence[str]) -> pd.DataFrame:
    """The summary.tsv of each contrast folder stacked in the given order, every column as text."""
    tables = [read_table(Path(folder) / "summary.tsv", dtype=str) for folder in contrast_folders]
    return pd.concat(tables, ignore_index=True)
