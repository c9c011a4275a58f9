"""Differential expression between conditions on pseudobulk samples (de.method: limma_voom,
edger_ql or pydeseq2; methods.py says why limma_voom is the default).

One test per group (cell type or cluster) and contrast. Before testing, each group passes
guardrails; a group that fails one is skipped with the reason in the summary, never crashed:
pseudobulk samples with fewer than min_cells cells are dropped; each contrast level then
needs min_replicates pseudobulk samples; genes are filtered (min_counts counts in at least
min_samples pseudobulk samples); the design must be estimable on the samples left (design
matrix of full column rank, with at least one residual degree of freedom). When no group of
a contrast can be tested, InputError lists every group's reason.

PyDESeq2 runs with its defaults (median-of-ratios size factors, parametric dispersion
trend, Cooks outlier refit and filtering, independent filtering). No test draws random
numbers, so results are deterministic. The summary's `method` column says which test ran.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from .design import design_problem, design_variables
from .methods import run_edgepython

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
    "method",
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
    method: str = "limma_voom"
    independent_filtering: bool = True
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


def filter_genes(counts: pd.DataFrame, *, min_counts: int, min_samples: int) -> pd.Index:
    """Genes with at least min_counts counts in at least min_samples pseudobulk samples (rows)."""
    passing = (counts.to_numpy() >= min_counts).sum(axis=0) >= min_samples
    return counts.columns[passing]


def run_deseq(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
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
    Every design variable is treated as a categorical factor. table.attrs["pydeseq2_messages"]
    holds PyDESeq2's warnings (run_contrast logs them: run_deseq may run in a worker process).
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
    with single_threaded_blas(), warnings.catch_warnings(record=True) as caught:
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


def run_test(
    counts: pd.DataFrame, metadata: pd.DataFrame, *, contrast: dict, settings: DESettings, threads: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test of settings.method on one group's pseudobulk counts (samples x genes); returns
    (table, log_normalised) as run_deseq does, whatever the method. With lfc_shrink, the column
    log2FoldChange_shrunk is PyDESeq2's apeGLM estimate for every method (it needs PyDESeq2's fit)."""
    options = dict(
        design=settings.design,
        factor=contrast["factor"],
        test=contrast["test"],
        reference=contrast["reference"],
    )
    if settings.method == "pydeseq2":
        return run_deseq(
            counts, metadata, **options, alpha=settings.alpha, lfc_shrink=settings.lfc_shrink, threads=threads
        )
    table, size_factors = run_edgepython(
        counts,
        metadata,
        method=settings.method,
        **options,
        alpha=settings.alpha,
        independent_filtering=settings.independent_filtering,
    )
    if settings.lfc_shrink:
        shrunk, _ = run_deseq(
            counts, metadata, **options, alpha=settings.alpha, lfc_shrink=True, threads=threads
        )
        table["log2FoldChange_shrunk"] = shrunk.set_index("gene")["log2FoldChange_shrunk"].reindex(
            table.index
        )
        table.attrs["pydeseq2_messages"] = shrunk.attrs.get("pydeseq2_messages", [])
    normalised = counts.to_numpy(dtype=float) / size_factors[:, None]
    levels = metadata.loc[counts.index, contrast["factor"]].astype(str).to_numpy()
    for level in (contrast["test"], contrast["reference"]):
        table[f"mean_norm_{level}"] = normalised[levels == level].mean(axis=0)
    table = table.drop(columns=["df_total"], errors="ignore")
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
    import scipy.linalg
    from pydeseq2.default_inference import DefaultInference

    class VectorisedInference(DefaultInference):
        def lin_reg_mu(self, counts, size_factors, design_matrix, min_mu):
            design = np.asarray(design_matrix, dtype=float)
            normalised = np.asarray(counts, dtype=float) / np.asarray(size_factors, dtype=float)[:, None]
            coefficients, *_ = scipy.linalg.lstsq(design, normalised)
            return np.maximum(np.asarray(size_factors)[:, None] * (design @ coefficients), min_mu)

    return VectorisedInference(n_cpus=threads)


def single_threaded_blas():
    """A context in which BLAS uses one thread (threadpoolctl; a no-op without it)."""
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
    *,
    group: str,
    contrast: dict,
    settings: DESettings,
    threads: int = 1,
) -> GroupResult:
    """Guardrails, then the test of settings.method, for one group and contrast (counts/metadata: all
    pseudobulk samples)."""
    in_group = metadata[metadata["group"].astype(str) == str(group)]
    kept = in_group[in_group["n_cells"] >= settings.min_cells]
    row = _summary_row(in_group, kept, group=group, contrast=contrast, settings=settings)
    group_counts = counts.loc[kept.index]
    genes = filter_genes(group_counts, min_counts=settings.min_counts, min_samples=settings.min_samples)
    reason = _skip_reason(row, kept, genes=genes, group=group, contrast=contrast, settings=settings)
    if reason:
        row.update(status="skipped", reason=reason)
        return GroupResult(summary=row)

    table, log_normalised = run_test(
        group_counts[genes], kept, contrast=contrast, settings=settings, threads=threads
    )
    called = table["padj"] < settings.alpha
    row.update(
        status="tested",
        genes_tested=len(genes),
        up=int((called & (table["log2FoldChange"] > 0)).sum()),
        down=int((called & (table["log2FoldChange"] < 0)).sum()),
    )
    return GroupResult(summary=row, table=table, log_normalised=log_normalised, metadata=kept)


def _summary_row(
    in_group: pd.DataFrame, kept: pd.DataFrame, *, group: str, contrast: dict, settings: DESettings
) -> dict:
    """The summary row of one group before testing: its pseudobulk samples per level (those with
    >= min_cells cells) and the ones dropped for too few cells, as "<sample>(<n cells>)"."""
    factor = contrast["factor"]
    row = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(
        contrast=contrast["name"],
        group=group,
        group_file=in_group["group_file"].iloc[0] if len(in_group) else "",
        factor=factor,
        test=contrast["test"],
        reference=contrast["reference"],
        genes_tested=0,
        up=0,
        down=0,
        method=settings.method,
    )
    small = in_group[in_group["n_cells"] < settings.min_cells]
    row["dropped_pseudobulk"] = _names(
        f"{s}({n})" for s, n in zip(small["sample"], small["n_cells"], strict=True)
    )
    for role in ("test", "reference"):
        of_level = kept[kept[factor].astype(str) == contrast[role]]
        row[f"n_samples_{role}"] = len(of_level)
        row[f"n_cells_{role}"] = int(of_level["n_cells"].sum())
        row[f"samples_{role}"] = _names(of_level["sample"])
    return row


def _skip_reason(
    row: dict, kept: pd.DataFrame, *, genes: pd.Index, group: str, contrast: dict, settings: DESettings
) -> str | None:
    """Why a group is not tested (the guardrails, in order), or None when it is."""
    if str(group) in {str(g) for g in settings.exclude_groups}:
        return "excluded by de.exclude_groups"
    short = [
        f"{contrast[role]} has {row[f'n_samples_{role}']}"
        for role in ("test", "reference")
        if row[f"n_samples_{role}"] < settings.min_replicates
    ]
    if short:
        return (
            f"too few replicates: {'; '.join(short)} pseudobulk sample(s) with >= {settings.min_cells} cells "
            f"(de.min_replicates = {settings.min_replicates})"
            + (
                f"; dropped for too few cells: {row['dropped_pseudobulk']}"
                if row["dropped_pseudobulk"]
                else ""
            )
        )
    if len(genes) == 0:
        return f"no gene has >= {settings.min_counts} counts in >= {settings.min_samples} pseudobulk samples"
    return design_problem(
        kept,
        design=settings.design,
        factor=contrast["factor"],
        test=contrast["test"],
        reference=contrast["reference"],
    )


def run_contrast(
    counts: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
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
    if threads > 1 and len(groups) > 1 and settings.method != "limma_voom":
        # Groups are independent: one group per worker process, PyDESeq2 single-threaded in each,
        # beats PyDESeq2's own gene-level parallelism (measured 13 vs 21 s for two groups of
        # 4 samples x 7,000 genes on 2 cores). Each group's result does not depend on where it ran.
        # Not for limma-voom: its fits are closed-form least squares, well under a second a group,
        # and starting the worker processes cost ~15 CPU s (measured on the 4-sample test project).
        from joblib import Parallel, delayed

        in_group = {g: metadata.index[metadata["group"].astype(str) == g] for g in groups}
        outcomes = Parallel(n_jobs=min(threads, len(groups)), backend="loky")(
            delayed(run_group)(
                counts.loc[in_group[g]],
                metadata.loc[in_group[g]],
                group=g,
                contrast=contrast,
                settings=settings,
            )
            for g in groups
        )
    else:
        outcomes = [
            run_group(counts, metadata, group=g, contrast=contrast, settings=settings, threads=threads)
            for g in groups
        ]
    results = dict(zip(groups, outcomes, strict=True))
    for group, result in results.items():
        _log_outcome(log, result, group=group, contrast=contrast, alpha=settings.alpha)
    summary = pd.DataFrame([r.summary for r in results.values()], columns=SUMMARY_COLUMNS)
    if not (summary["status"] == "tested").any():
        reasons = "\n".join(f"  - {g}: {r}" for g, r in zip(summary["group"], summary["reason"], strict=True))
        raise InputError(
            f"contrast {contrast['name']} ({contrast['factor']}: {contrast['test']} vs {contrast['reference']}): "
            f"no {settings.group_by} group can be tested:\n{reasons or '  (no groups)'}\n"
            "Lower de.min_cells / de.min_replicates, simplify de.design, or add samples."
        )
    return results, summary


def _log_outcome(
    log: logging.Logger, result: GroupResult, *, group: str, contrast: dict, alpha: float
) -> None:
    """Log PyDESeq2's messages for a group (taken out of its table's attrs) and what came of it."""
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
            alpha,
        )
    else:
        log.warning("%s / %s: skipped: %s", contrast["name"], group, row["reason"])
