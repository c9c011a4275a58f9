"""Differential expression between conditions on pseudobulk samples, with PyDESeq2.

One test per group (cell type or cluster) and contrast. Before testing, each group passes
guardrails; a group that fails one is skipped with the reason in the summary, never crashed:
pseudobulk samples with fewer than min_cells cells are dropped; each contrast level then
needs min_replicates pseudobulk samples; genes are filtered (min_counts counts in at least
min_samples pseudobulk samples); the design must be estimable on the samples left (design
matrix of full column rank, with at least one residual degree of freedom). When no group of
a contrast can be tested, InputError lists every group's reason.

PyDESeq2 runs with its defaults (median-of-ratios size factors, parametric dispersion
trend, Cooks outlier refit and filtering, independent filtering); it draws no random
numbers, so results are deterministic.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg

from .de_config import design_problem, design_variables
from .errors import InputError

RESULT_COLUMNS = ["gene", "baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]
SUMMARY_COLUMNS = [
    "contrast",
    "group",
    "group_file",
    "factor",
    "test",
    "reference",
    "status",
    "n_samples_test",
    "n_samples_reference",
    "n_cells_test",
    "n_cells_reference",
    "samples_test",
    "samples_reference",
    "dropped_pseudobulk",
    "genes_tested",
    "up",
    "down",
    "reason",
]

_log = logging.getLogger("sccohort")


@dataclass
class DESettings:
    """The de: config block, as used by the tests of one contrast."""

    design: str = "~ condition"
    group_by: str = "cell_type"
    min_cells: int = 10
    min_replicates: int = 2
    min_counts: int = 10
    min_samples: int = 2
    alpha: float = 0.05
    lfc_shrink: bool = False
    exclude_groups: list[str] = field(default_factory=list)
    heatmap_genes: int = 30

    @classmethod
    def from_config(cls, de: dict) -> DESettings:
        known = {k: v for k, v in de.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class GroupResult:
    """Outcome of one group x contrast: the summary row, and the results when tested."""

    summary: dict
    table: pd.DataFrame | None = None
    log_normalised: pd.DataFrame | None = None  # log2(normalised counts + 1), pseudobulk x tested genes
    metadata: pd.DataFrame | None = None  # the pseudobulk samples that were tested


def filter_genes(counts: pd.DataFrame, min_counts: int, min_samples: int) -> pd.Index:
    """Genes with at least min_counts counts in at least min_samples pseudobulk samples (rows)."""
    passing = (counts.to_numpy() >= min_counts).sum(axis=0) >= min_samples
    return counts.columns[passing]


def run_deseq(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    design: str,
    factor: str,
    test: str,
    reference: str,
    alpha: float = 0.05,
    lfc_shrink: bool = False,
    threads: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PyDESeq2 on pseudobulk counts (samples x genes) for the contrast test vs reference of factor.

    Returns (table, log_normalised): table has one row per gene with gene, baseMean,
    log2FoldChange, lfcSE, stat, pvalue, padj, log2FoldChange_shrunk (when lfc_shrink;
    apeGLM prior), and mean_norm_<level> (mean normalised counts of the test and reference
    pseudobulk samples), sorted by p-value; log_normalised is log2(counts / size factor + 1).
    Every design variable is treated as a categorical factor.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.ds import DeseqStats

    variables = design_variables(design)
    meta = pd.DataFrame(index=counts.index)
    for variable in variables:
        meta[variable] = metadata.loc[counts.index, variable].astype(str)
    # Order the contrast factor's levels reference first, so its design column is test vs reference.
    order = [reference, test] + sorted(set(meta[factor]) - {reference, test})
    meta[factor] = pd.Categorical(meta[factor], categories=order)
    for variable in variables:
        if variable != factor:
            meta[variable] = pd.Categorical(meta[variable], categories=sorted(set(meta[variable])))

    # PyDESeq2 fits thousands of tiny per-gene problems (parallel over genes with n_cpus); BLAS
    # threads on those only add overhead (measured ~1.7x slower CPU time with 2 BLAS threads).
    with _single_threaded_blas(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dds = DeseqDataSet(
            counts=counts.astype(np.int64),
            metadata=meta,
            design=design,
            refit_cooks=True,
            inference=vectorised_inference(threads),
            quiet=True,
        )
        dds.deseq2()
        stats = DeseqStats(dds, contrast=[factor, test, reference], alpha=alpha, n_cpus=threads, quiet=True)
        stats.summary()
        table = stats.results_df.copy()
        if lfc_shrink:
            stats.lfc_shrink(coeff=f"{factor}[T.{test}]")
            table["log2FoldChange_shrunk"] = stats.results_df["log2FoldChange"]
    # kept with the table: run_contrast logs them (run_deseq may run in a worker process)
    table.attrs["pydeseq2_messages"] = [
        str(warning.message).replace("\n", " ")
        for warning in caught
        if not issubclass(warning.category, (DeprecationWarning, FutureWarning))
    ]

    size_factors = np.asarray(dds.obs["size_factors"], dtype=float)
    normalised = counts.to_numpy(dtype=float) / size_factors[:, None]
    for level in (test, reference):
        rows = (meta[factor] == level).to_numpy()
        table[f"mean_norm_{level}"] = normalised[rows].mean(axis=0)
    genes = table.index.astype(str)
    table = table.reset_index(drop=True)
    table.insert(0, "gene", genes)
    table = table.sort_values(["pvalue", "gene"], na_position="last", kind="mergesort").reset_index(drop=True)
    log_normalised = pd.DataFrame(np.log2(normalised + 1), index=counts.index, columns=counts.columns)
    return table, log_normalised


def vectorised_inference(threads: int = 1):
    """PyDESeq2's DefaultInference with `lin_reg_mu` solved for all genes in one call.

    PyDESeq2 0.5 starts the genewise dispersion fit (for designs with as many distinct rows as
    coefficients, the usual case) from a least-squares fit of normalised counts on the design,
    made with one scikit-learn LinearRegression per gene: about a third of the whole DESeq2 run
    (measured 18.8 of 58 s for 7,037 genes). The same least-squares problem with all genes as
    right-hand sides is one LAPACK call; the estimates are the same.
    """
    from pydeseq2.default_inference import DefaultInference

    class VectorisedInference(DefaultInference):
        def lin_reg_mu(self, counts, size_factors, design_matrix, min_mu):
            design = np.asarray(design_matrix, dtype=float)
            normalised = np.asarray(counts, dtype=float) / np.asarray(size_factors, dtype=float)[:, None]
            coefficients, *_ = scipy.linalg.lstsq(design, normalised)
            return np.maximum(np.asarray(size_factors)[:, None] * (design @ coefficients), min_mu)

    return VectorisedInference(n_cpus=threads)


def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _names(values) -> str:
    return ",".join(map(str, values))


def run_group(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    group: str,
    contrast: dict,
    settings: DESettings,
    threads: int = 1,
) -> GroupResult:
    """Guardrails, then PyDESeq2, for one group and contrast (counts/metadata: all pseudobulk samples)."""
    factor, test, reference = contrast["factor"], contrast["test"], contrast["reference"]
    in_group = metadata[metadata["group"].astype(str) == str(group)]
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(
        contrast=contrast["name"],
        group=group,
        group_file=in_group["group_file"].iloc[0] if len(in_group) else "",
        factor=factor,
        test=test,
        reference=reference,
        genes_tested=0,
        up=0,
        down=0,
    )

    def skipped(reason: str) -> GroupResult:
        row.update(status="skipped", reason=reason)
        return GroupResult(summary=row)

    small = in_group[in_group["n_cells"] < settings.min_cells]
    kept = in_group[in_group["n_cells"] >= settings.min_cells]
    row["dropped_pseudobulk"] = _names(
        f"{s}({n})" for s, n in zip(small["sample"], small["n_cells"], strict=True)
    )
    for role, level in (("test", test), ("reference", reference)):
        of_level = kept[kept[factor].astype(str) == level]
        row[f"n_samples_{role}"] = len(of_level)
        row[f"n_cells_{role}"] = int(of_level["n_cells"].sum())
        row[f"samples_{role}"] = _names(of_level["sample"])

    if str(group) in {str(g) for g in settings.exclude_groups}:
        return skipped("excluded by de.exclude_groups")
    short = [
        f"{level} has {row[f'n_samples_{role}']}"
        for role, level in (("test", test), ("reference", reference))
        if row[f"n_samples_{role}"] < settings.min_replicates
    ]
    if short:
        return skipped(
            f"too few replicates: {'; '.join(short)} pseudobulk sample(s) with >= {settings.min_cells} cells "
            f"(de.min_replicates = {settings.min_replicates})"
            + (f"; dropped for too few cells: {row['dropped_pseudobulk']}" if len(small) else "")
        )
    group_counts = counts.loc[kept.index]
    genes = filter_genes(group_counts, settings.min_counts, settings.min_samples)
    if len(genes) == 0:
        return skipped(
            f"no gene has >= {settings.min_counts} counts in >= {settings.min_samples} pseudobulk samples"
        )
    problem = design_problem(kept, settings.design, factor, test, reference)
    if problem:
        return skipped(problem)

    table, log_normalised = run_deseq(
        group_counts[genes],
        kept,
        settings.design,
        factor,
        test,
        reference,
        alpha=settings.alpha,
        lfc_shrink=settings.lfc_shrink,
        threads=threads,
    )
    called = table["padj"] < settings.alpha
    row.update(
        status="tested",
        genes_tested=len(genes),
        up=int((called & (table["log2FoldChange"] > 0)).sum()),
        down=int((called & (table["log2FoldChange"] < 0)).sum()),
    )
    return GroupResult(summary=row, table=table, log_normalised=log_normalised, metadata=kept)


def run_contrast(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    contrast: dict,
    settings: DESettings,
    threads: int = 1,
    log: logging.Logger | None = None,
) -> tuple[dict[str, GroupResult], pd.DataFrame]:
    """Test every group for one contrast. Returns ({group: GroupResult}, summary table).

    Raises InputError (listing every group's reason) when no group can be tested.
    """
    log = log or _log
    for column in design_variables(settings.design):
        if column not in metadata.columns:
            raise InputError(
                f"pseudobulk metadata lacks design column {column!r} (it has {', '.join(metadata.columns)}); "
                "the annotation stage must copy every sample-sheet column into obs."
            )
    groups = sorted(metadata["group"].astype(str).unique())
    if threads > 1 and len(groups) > 1:
        # Groups are independent: one group per worker process, PyDESeq2 single-threaded in each,
        # beats PyDESeq2's own gene-level parallelism (measured 13 vs 21 s for two groups of
        # 4 samples x 7,000 genes on 2 cores). Each group's result does not depend on where it ran.
        from joblib import Parallel, delayed

        in_group = {g: metadata.index[metadata["group"].astype(str) == g] for g in groups}
        outcomes = Parallel(n_jobs=min(threads, len(groups)), backend="loky")(
            delayed(run_group)(counts.loc[in_group[g]], metadata.loc[in_group[g]], g, contrast, settings)
            for g in groups
        )
    else:
        outcomes = [run_group(counts, metadata, g, contrast, settings, threads=threads) for g in groups]
    results: dict[str, GroupResult] = {}
    for group, result in zip(groups, outcomes, strict=True):
        row = result.summary
        if result.table is not None:
            for message in result.table.attrs.pop("pydeseq2_messages", []):
                log.info("%s / %s: PyDESeq2: %s", contrast["name"], group, message)
        if row["status"] == "tested":
            log.info(
                "%s / %s: %s genes tested, %s up, %s down (padj < %s)",
                contrast["name"],
                group,
                row["genes_tested"],
                row["up"],
                row["down"],
                settings.alpha,
            )
        else:
            log.warning("%s / %s: skipped: %s", contrast["name"], group, row["reason"])
        results[group] = result
    summary = pd.DataFrame([r.summary for r in results.values()], columns=SUMMARY_COLUMNS)
    if not (summary["status"] == "tested").any():
        reasons = "\n".join(f"  - {g}: {r}" for g, r in zip(summary["group"], summary["reason"], strict=True))
        raise InputError(
            f"contrast {contrast['name']} ({contrast['factor']}: {contrast['test']} vs {contrast['reference']}): "
            f"no {settings.group_by} group can be tested:\n{reasons or '  (no groups)'}\n"
            "Lower de.min_cells / de.min_replicates, simplify de.design, or add samples."
        )
    return results, summary


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg)
# ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _called(table: pd.DataFrame, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    padj = table["padj"].to_numpy(dtype=float)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    significant = np.nan_to_num(padj, nan=1.0) < alpha
    return significant & (lfc > 0), significant & (lfc < 0)


def plot_volcano(table: pd.DataFrame, alpha: float, title: str, path, n_labels: int = 10) -> None:
    """log2 fold change vs -log10 p-value; genes with padj < alpha coloured, the top ones named."""
    plt = _pyplot()
    up, down = _called(table, alpha)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    pvalue = table["pvalue"].to_numpy(dtype=float)
    y = -np.log10(np.clip(np.nan_to_num(pvalue, nan=1.0), 1e-300, 1.0))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    _scatter_called(ax, lfc, y, up, down, label_rest=True)
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
    _save(fig, path)


def _scatter_called(ax, x, y, up, down, label_rest: bool) -> None:
    """Genes not called in grey, up in red, down in blue (the volcano and MA plots' points)."""
    rest = ~(up | down)
    ax.scatter(
        x[rest], y[rest], s=5, c="0.7", rasterized=True, label=f"n.s. ({rest.sum()})" if label_rest else None
    )
    ax.scatter(x[up], y[up], s=7, c="#c0392b", rasterized=True, label=f"up ({up.sum()})")
    ax.scatter(x[down], y[down], s=7, c="#2e86c1", rasterized=True, label=f"down ({down.sum()})")


def plot_ma(table: pd.DataFrame, alpha: float, title: str, path) -> None:
    """Mean normalised expression (baseMean) vs log2 fold change; genes with padj < alpha coloured."""
    plt = _pyplot()
    up, down = _called(table, alpha)
    x = np.log10(table["baseMean"].to_numpy(dtype=float) + 1)
    lfc = table["log2FoldChange"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    _scatter_called(ax, x, lfc, up, down, label_rest=False)
    ax.axhline(0, c="0.5", lw=0.5)
    ax.set_xlabel("log10(baseMean + 1)")
    ax.set_ylabel("log2 fold change")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, title=f"padj < {alpha}", title_fontsize=7)
    _save(fig, path)


def plot_group_heatmap(result: GroupResult, contrast: dict, n_genes: int, title: str, path) -> None:
    """Top genes (smallest p-values) x pseudobulk samples, z-scored log2 normalised counts."""
    plt = _pyplot()
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
    _save(fig, path)


def plot_lfc_heatmap(
    results: dict[str, GroupResult], alpha: float, title: str, path, per_group: int = 5, max_genes: int = 60
) -> None:
    """Overview: the top genes of each tested group (by p-value, significant first) x groups, log2 fold
    change; '*' marks padj < alpha, grey means not tested in that group."""
    plt = _pyplot()
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
    _save(fig, path)


def _save(fig, path) -> None:
    from .runtime import atomic_path

    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def write_contrast(
    results: dict[str, GroupResult], summary: pd.DataFrame, contrast: dict, settings: DESettings, outdir
) -> None:
    """Write one contrast's folder: <group_file>.tsv per tested group, summary.tsv, and figures/
    (<group_file>.volcano.png, .ma.png, .heatmap.png per tested group; all_groups.lfc_heatmap.png)."""
    from .runtime import write_table

    outdir = Path(outdir)
    figures = outdir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    label = f"{contrast['factor']}: {contrast['test']} vs {contrast['reference']}"
    for group, result in results.items():
        if result.table is None:
            continue
        name = result.summary["group_file"]
        write_table(result.table, outdir / f"{name}.tsv")
        title = f"{group} - {label} ({settings.design})"
        plot_volcano(result.table, settings.alpha, title, figures / f"{name}.volcano.png")
        plot_ma(result.table, settings.alpha, title, figures / f"{name}.ma.png")
        plot_group_heatmap(result, contrast, settings.heatmap_genes, title, figures / f"{name}.heatmap.png")
    plot_lfc_heatmap(
        results,
        settings.alpha,
        f"Top genes per {settings.group_by} - {label}",
        figures / "all_groups.lfc_heatmap.png",
    )
    write_table(summary, outdir / "summary.tsv")
