"""Per-sample quality control: metrics per barcode, adaptive + fixed thresholds, pass/fail.

Adaptive thresholds are median +/- n x MAD, with the MAD from scipy.stats.median_abs_deviation
(unscaled, as in the single-cell best-practices book), not pandas' `.mad`, which was the *mean*
absolute deviation. Counts and genes are judged on the log1p scale, where their distributions
are close to symmetric; % mitochondrial only from above. Each fixed floor or cap from the config
(or the sample sheet) is applied together with the adaptive limit: the stricter of the two wins,
and thresholds.json records which one did.

qc.adaptive_reference picks what the upper limits and the mito test compare a cell with:
"neighbours" (default) its transcriptional neighbours (qc/damage.py: damaged = mito raised AND
non-mito counts lowered; oversized for its kind), "sample" the whole sample (median + MADs of
earlier versions). Lower limits on counts and genes are sample-wide either way.
"""

from __future__ import annotations

import logging
import re

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ..names import REMOVAL_REASONS

METRICS = (
    "total_counts",
    "n_genes_by_counts",
    "pct_counts_mt",
    "pct_counts_ribo",
    "pct_counts_hb",
    "pct_counts_in_top_20_genes",
)
# The reason a cell fails each threshold; fail_reason joins them in names.REMOVAL_REASONS order,
# which ends with the doublet reason finalise_sample adds.
FAIL_REASONS = {
    ("total_counts", "lower"): "low_counts",
    ("total_counts", "upper"): "high_counts",
    ("n_genes_by_counts", "lower"): "low_genes",
    ("n_genes_by_counts", "upper"): "high_genes",
    ("pct_counts_mt", "upper"): "high_pct_mt",
    ("pct_counts_other_species", "upper"): "high_pct_other_species",
}
DOUBLET_REASON = "doublet"
# Reasons the neighbourhood checks (qc/damage.py) add.
NEIGHBOURHOOD_REASONS = ("high_counts", "high_genes", "damaged")
REFERENCES = ("neighbours", "sample")


def qc_sample(
    *,
    raw_h5ad: str,
    output: str,
    sample_row: dict,
    override_columns: list[str],
    qc_options: dict,
    seed: int = 0,
    log: logging.Logger,
) -> None:
    """Rule qc_sample: per-barcode QC metrics and adaptive + fixed thresholds for one sample.

    `qc_options` is the config's qc block; the sheet's `override_columns` of `sample_row` override
    it for this sample; `seed` fixes the PCA of the neighbourhood checks. Writes `output`: the raw
    object with run_qc's obs/var columns and uns["qc_thresholds"], uns["qc_metric_notes"].
    """
    from .. import runtime
    from ..sheet import sample_override

    adata = ad.read_h5ad(raw_h5ad)
    overrides = {column: sample_override(sample_row, column) for column in override_columns}
    adata, thresholds = run_qc(adata, qc_options=qc_options, overrides=overrides, seed=seed)
    adata.uns["qc_thresholds"] = thresholds
    log.info("%d of %d barcodes pass the QC thresholds", int(adata.obs["qc_pass"].sum()), adata.n_obs)
    if "damaged" in thresholds:
        log.info("neighbourhood checks: %s", _neighbourhood_summary(thresholds))
    for note in adata.uns["qc_metric_notes"].values():
        if note and " " in str(note):
            log.warning("%s", note)
    runtime.write_h5ad(adata, output)


def resolve_mt_prefix(gene_symbols: pd.Index, mt_prefix: str = "auto") -> str | None:
    """The mitochondrial prefix that matches this sample's genes, or None when none does."""
    symbols = pd.Index(gene_symbols).astype(str)
    candidates = ["MT-", "mt-"] if mt_prefix == "auto" else [mt_prefix]
    for prefix in candidates:
        if symbols.str.startswith(prefix).any():
            return prefix
    return None


def annotate_qc_metrics(
    adata: ad.AnnData,
    *,
    mt_prefix: str = "auto",
    ribo_prefixes: tuple[str, ...] | list[str] = ("RPS", "RPL"),
    hb_pattern: str = r"^HB[ABDEGMQZ][0-9]?$",
) -> ad.AnnData:
    """Add per-barcode QC metrics to obs and gene classes (mt, ribo, hb) to var, in place.

    Writes: var["mt"], var["ribo"], var["hb"]; scanpy's calculate_qc_metrics columns in obs and
    var (METRICS among them), obs["pct_counts_in_top_20_genes"] from top_genes_percent (also for
    samples with fewer genes);
    uns["qc_metric_notes"] = {"mt_prefix", and "pct_counts_mt" when it was not computed}.
    A sample without mitochondrial genes gets pct_counts_mt = NaN and the note says so; the
    % mito threshold is then skipped.
    """
    import scanpy as sc

    symbols = adata.var["gene_symbol"] if "gene_symbol" in adata.var else adata.var_names.to_series()
    symbols = pd.Index(symbols.astype(str))
    prefix = resolve_mt_prefix(symbols, mt_prefix)
    adata.var["mt"] = symbols.str.startswith(prefix) if prefix else np.zeros(adata.n_vars, dtype=bool)
    adata.var["ribo"] = symbols.str.upper().str.startswith(tuple(p.upper() for p in ribo_prefixes))
    pattern = re.compile(hb_pattern, flags=re.IGNORECASE)
    adata.var["hb"] = np.array([bool(pattern.match(s)) for s in symbols])
    # percent_top=None: scanpy's top-genes share is a parallel numba kernel whose compile took
    # 35-40 s of CPU in every process without a warm cache (each job on a fresh node), eight
    # times the rest of QC; top_genes_percent computes the same column.
    sc.pp.calculate_qc_metrics(
        adata, qc_vars=["mt", "ribo", "hb"], percent_top=None, log1p=True, inplace=True
    )
    adata.obs["pct_counts_in_top_20_genes"] = top_genes_percent(adata.X, n_top=20)
    notes = {"mt_prefix": prefix}
    if prefix is None:
        adata.obs["pct_counts_mt"] = np.nan
        notes["pct_counts_mt"] = (
            f"no gene starts with the mitochondrial prefix ({mt_prefix}); % mitochondrial not computed"
        )
    adata.uns["qc_metric_notes"] = notes
    return adata


def top_genes_percent(counts, *, n_top: int) -> np.ndarray:
    """Percent of each barcode's counts in its `n_top` largest genes (all of them when it has
    fewer), as scanpy's pct_counts_in_top_{n}_genes; NaN for a barcode without counts."""
    import scipy.sparse as sp

    counts = sp.csr_matrix(counts)
    # row by row on the stored values (no float64 copy of the whole matrix: a 60,000-cell
    # sample holds ~10^8 of them); sums in float64
    data, indptr = counts.data, counts.indptr
    top = np.zeros(counts.shape[0])
    for row in range(counts.shape[0]):
        values = data[indptr[row] : indptr[row + 1]]
        largest = values if len(values) <= n_top else np.partition(values, -n_top)[-n_top:]
        top[row] = largest.sum(dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100 * top / totals, np.nan)


def mad_limits(values: np.ndarray, n_mads: float) -> tuple[float, float, float, float]:
    """(median, MAD, median - n*MAD, median + n*MAD) of the finite values."""
    from scipy.stats import median_abs_deviation

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan,) * 4
    median = float(np.median(values))
    mad = float(median_abs_deviation(values))
    return median, mad, median - n_mads * mad, median + n_mads * mad


def _combine(
    adaptive: float | None, fixed: float | None, fixed_source: str, bound: str, adaptive_source: str
):
    """Pick the stricter of an adaptive and a fixed limit; return (value, source)."""
    options = [(v, s) for v, s in ((adaptive, adaptive_source), (fixed, fixed_source)) if v is not None]
    options = [(v, s) for v, s in options if np.isfinite(v)]
    if not options:
        return None, "none"
    pick = max if bound == "lower" else min
    return pick(options, key=lambda option: option[0])


class _Settings:
    """One sample's QC settings: a sheet override wins over the config's qc block; each value
    comes with where it came from (for thresholds.json)."""

    def __init__(self, qc_options: dict, overrides: dict | None):
        self.qc_options = qc_options
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    def __call__(self, key: str | None, override_key: str | None = None) -> tuple[float | None, str]:
        if key is None:
            return None, "none"
        override_key = override_key or key
        if override_key in self.overrides:
            return float(self.overrides[override_key]), f"sample sheet column {override_key}"
        value = self.qc_options.get(key)
        return (None if value is None else float(value)), f"config qc.{key}"


def compute_thresholds(
    obs: pd.DataFrame, *, qc_options: dict, overrides: dict | None = None, reference: str = "sample"
) -> dict:
    """Thresholds for one sample and where each came from.

    `qc_options` is the config's qc block; `overrides` maps sheet columns (min_counts, min_genes,
    max_genes, max_pct_mt, n_mads, n_mads_mt) to numbers for this sample (None = not set). With
    `reference` "neighbours" the adaptive upper limits and the adaptive mito cap are left to the
    neighbourhood checks (qc/damage.py): only the fixed caps stand here, and the entries say so.
    """
    setting = _Settings(qc_options, overrides)
    sample_wide = reference == "sample"
    thresholds: dict = {}
    for metric, n_mads_key, floor_key, cap_key in (
        ("total_counts", "n_mads_counts", "min_counts", None),
        ("n_genes_by_counts", "n_mads_genes", "min_genes", "max_genes"),
    ):
        thresholds[metric] = _size_threshold(
            obs[metric].to_numpy(),
            setting(n_mads_key, "n_mads"),
            setting(floor_key),
            setting(cap_key),
            adaptive_upper=sample_wide,
        )
    thresholds["pct_counts_mt"] = _mito_threshold(
        obs["pct_counts_mt"].to_numpy(dtype=float),
        setting("n_mads_mt"),
        setting("max_pct_mt"),
        adaptive=sample_wide,
    )
    return thresholds


def _size_threshold(
    values: np.ndarray, n_mads_setting, floor_setting, cap_setting, *, adaptive_upper=True
) -> dict:
    """Lower and upper limit of counts or genes per cell: MADs on log1p, with a fixed floor/cap.

    Without `adaptive_upper` only the fixed cap is an upper limit here (the neighbourhood check
    adds the adaptive one per cell)."""
    (n_mads, n_source), (floor, floor_source), (cap, cap_source) = n_mads_setting, floor_setting, cap_setting
    median, mad, low, high = mad_limits(np.log1p(values), n_mads)
    adaptive_source = f"adaptive: median {n_mads:g} MADs on log1p ({n_source})"
    adaptive_low = float(np.expm1(low)) if np.isfinite(low) and mad > 0 else None
    adaptive_high = float(np.expm1(high)) if np.isfinite(high) and mad > 0 and adaptive_upper else None
    lower, lower_source = _combine(adaptive_low, floor, floor_source, "lower", adaptive_source)
    upper, upper_source = _combine(adaptive_high, cap, cap_source, "upper", adaptive_source)
    return {
        "median": float(np.expm1(median)) if np.isfinite(median) else None,
        "mad_log1p": mad,
        "n_mads": n_mads,
        "lower": lower,
        "lower_source": lower_source,
        "upper": upper,
        "upper_source": upper_source,
    }


def _mito_threshold(pct_mt: np.ndarray, n_mads_setting, cap_setting, *, adaptive=True) -> dict:
    """Upper limit of % mitochondrial counts: median + MADs, with a fixed cap; skipped without MT genes.

    Without `adaptive` only the fixed cap stands (the damage test replaces the adaptive cap)."""
    (n_mads_mt, n_mads_mt_source), (cap, cap_source) = n_mads_setting, cap_setting
    if np.all(np.isnan(pct_mt)):
        return {
            "skipped": "no mitochondrial genes in this sample; % mitochondrial threshold not applied",
            "lower": None,
            "upper": None,
            "lower_source": "none",
            "upper_source": "none",
        }
    median, mad, _, high = mad_limits(pct_mt, n_mads_mt)
    # A MAD of 0 (e.g. almost no MT reads) would fail every cell above the median: no adaptive cap then.
    adaptive_high = high if mad > 0 and adaptive else None
    adaptive_source = f"adaptive: median + {n_mads_mt:g} MADs ({n_mads_mt_source})"
    upper, upper_source = _combine(adaptive_high, cap, cap_source, "upper", adaptive_source)
    return {
        "median": median,
        "mad": mad,
        "n_mads": n_mads_mt,
        "lower": None,
        "lower_source": "none",
        "upper": upper,
        "upper_source": upper_source,
    }


def annotate_other_species(adata: ad.AnnData, *, prefix: str) -> ad.AnnData:
    """The share of each barcode's counts from genes of a second species (symbols starting with
    `prefix`, e.g. "MOUSE_" in a human-mouse mixture), in place.

    Writes: var["other_species"] (bool), obs["pct_counts_other_species"] (0-100; 0 for an empty
    barcode); uns["qc_metric_notes"]["other_species"] when no gene matches.
    """
    symbols = adata.var["gene_symbol"] if "gene_symbol" in adata.var else adata.var_names.to_series()
    other = pd.Index(symbols.astype(str)).str.startswith(prefix)
    adata.var["other_species"] = np.asarray(other)
    totals = np.asarray(adata.X.sum(axis=1)).ravel().astype(float)
    other_counts = np.asarray(adata.X[:, np.flatnonzero(other)].sum(axis=1)).ravel().astype(float)
    adata.obs["pct_counts_other_species"] = 100 * other_counts / np.maximum(totals, 1)
    if not other.any():
        notes = dict(adata.uns.get("qc_metric_notes", {}))
        notes["other_species"] = (
            f"no gene starts with qc.other_species_prefix {prefix!r}; the check removes nothing"
        )
        adata.uns["qc_metric_notes"] = notes
    return adata


def other_species_threshold(adata: ad.AnnData, *, max_pct: float | None) -> dict:
    """The fixed cap on % counts from the second species (qc.max_pct_other_species), with the
    sample's median share, in the form of the other entries of thresholds.json."""
    share = adata.obs["pct_counts_other_species"].to_numpy(dtype=float)
    return {
        "n_genes": int(adata.var["other_species"].sum()),
        "median": float(np.median(share)) if share.size else None,
        "lower": None,
        "lower_source": "none",
        "upper": None if max_pct is None else float(max_pct),
        "upper_source": "none" if max_pct is None else "config qc.max_pct_other_species",
    }


def apply_thresholds(obs: pd.DataFrame, thresholds: dict) -> tuple[pd.Series, pd.Series]:
    """Return (qc_pass, fail_reason): reasons joined by ';' in a fixed order, '' for passing cells."""
    reasons = pd.DataFrame(index=obs.index)
    ordered = sorted(FAIL_REASONS.items(), key=lambda item: REMOVAL_REASONS.index(item[1]))
    for (metric, bound), reason in ordered:
        if metric not in obs:  # pct_counts_other_species without qc.other_species_prefix
            reasons[reason] = ""
            continue
        limit = thresholds.get(metric, {}).get(bound)
        values = obs[metric].to_numpy(dtype=float)
        if limit is None:
            failed = np.zeros(len(obs), dtype=bool)
        elif bound == "lower":
            failed = values < limit
        else:
            failed = values > limit
        reasons[reason] = np.where(failed, reason, "")
    fail_reason = (
        reasons.apply(lambda row: ";".join(r for r in row if r), axis=1) if len(obs) else pd.Series(dtype=str)
    )
    fail_reason = fail_reason.astype(str).reindex(obs.index).fillna("")
    return fail_reason == "", fail_reason


def run_qc(
    adata: ad.AnnData, *, qc_options: dict, overrides: dict | None = None, seed: int = 0
) -> tuple[ad.AnnData, dict]:
    """Metrics, thresholds and pass/fail for one sample; returns (adata, thresholds).

    Writes: what annotate_qc_metrics writes (and annotate_other_species, when
    qc.other_species_prefix is set; and damage.neighbourhood_checks, with qc.adaptive_reference
    neighbours), obs["qc_pass"] (bool), obs["fail_reason"] (FAIL_REASONS and "damaged" joined by
    ';' in names.REMOVAL_REASONS order, '' for passing barcodes).
    """
    annotate_qc_metrics(
        adata,
        mt_prefix=qc_options.get("mt_prefix", "auto"),
        ribo_prefixes=qc_options.get("ribo_prefixes", ["RPS", "RPL"]),
        hb_pattern=qc_options.get("hb_pattern", r"^HB[ABDEGMQZ][0-9]?$"),
    )
    reference = qc_options.get("adaptive_reference", "sample")
    if reference not in REFERENCES:
        raise InputError(f"qc.adaptive_reference must be one of {', '.join(REFERENCES)}, not {reference!r}.")
    thresholds = compute_thresholds(
        adata.obs, qc_options=qc_options, overrides=overrides, reference=reference
    )
    if qc_options.get("other_species_prefix"):
        thresholds["pct_counts_other_species"] = other_species_threshold(
            annotate_other_species(adata, prefix=qc_options["other_species_prefix"]),
            max_pct=qc_options.get("max_pct_other_species"),
        )
    qc_pass, fail_reason = apply_thresholds(adata.obs, thresholds)
    if reference == "neighbours":
        fail_reason = _neighbourhood_reasons(adata, thresholds, fail_reason, qc_options, overrides, seed)
    adata.obs["qc_pass"] = (fail_reason == "").to_numpy()
    adata.obs["fail_reason"] = fail_reason.to_numpy()
    return adata, thresholds


def _neighbourhood_reasons(adata, thresholds, fail_reason, qc_options, overrides, seed) -> pd.Series:
    """damage.neighbourhood_checks on the cells passing the sample-wide limits (the species check
    aside, so that turning it on changes no other cell's call); their reasons are
    added to `fail_reason` and their record to `thresholds` ("neighbourhood", "damaged", and
    "upper_neighbours" in the counts and genes entries)."""
    from .damage import neighbourhood_checks

    setting = _Settings(qc_options, overrides)
    n_mads = {
        key: setting(key, override)[0]
        for key, override in (
            ("n_mads_counts", "n_mads"),
            ("n_mads_genes", "n_mads"),
            ("n_mads_mt", None),
            ("n_mads_mt_alone", None),
        )
    }
    masks, record = neighbourhood_checks(
        adata,
        candidates=fail_reason.isin(("", "high_pct_other_species")).to_numpy(),
        n_neighbors=int(qc_options.get("n_neighbors", 30)),
        n_mads_mt=n_mads["n_mads_mt"],
        n_mads_mt_alone=n_mads["n_mads_mt_alone"] or 6.0,
        n_mads_counts=n_mads["n_mads_counts"],
        n_mads_genes=n_mads["n_mads_genes"],
        seed=seed,
    )
    thresholds["neighbourhood"] = {
        k: record[k] for k in ("reference", "n_neighbors", "n_cells", "skipped") if k in record
    }
    if "skipped" not in record:
        thresholds["damaged"] = record["damaged"]
        for metric in ("total_counts", "n_genes_by_counts"):
            thresholds[metric]["upper_neighbours"] = record[metric]
    return add_reasons(fail_reason, masks)


def add_reasons(fail_reason: pd.Series, masks: dict[str, np.ndarray]) -> pd.Series:
    """`fail_reason` with each reason of `masks` (bool per barcode) added where set, every cell's
    reasons joined by ';' in names.REMOVAL_REASONS order."""
    added = fail_reason.astype(str).str.split(";").tolist()
    for reason, mask in masks.items():
        for i in np.flatnonzero(mask):
            added[i].append(reason)
    joined = [";".join(sorted({r for r in rs if r}, key=REMOVAL_REASONS.index)) for rs in added]
    return pd.Series(joined, index=fail_reason.index, dtype=str)


def _neighbourhood_summary(thresholds: dict) -> str:
    damaged = thresholds.get("damaged", {})
    parts = [f"{damaged.get('n_damaged', 0)} damaged"]
    for metric, label in (("total_counts", "oversized (counts)"), ("n_genes_by_counts", "oversized (genes)")):
        parts.append(f"{thresholds[metric].get('upper_neighbours', {}).get('n_failed', 0)} {label}")
    return ", ".join(parts) + f" among {thresholds['neighbourhood']['n_cells']} cells"
