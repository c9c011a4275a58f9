"""Per-sample quality control: metrics per barcode, adaptive + fixed thresholds, pass/fail.

Adaptive thresholds are median +/- n x MAD, with the MAD from scipy.stats.median_abs_deviation
(unscaled, as in the single-cell best-practices book), not pandas' `.mad`, which was the *mean*
absolute deviation. Counts and genes are judged on the log1p scale, where their distributions
are close to symmetric; % mitochondrial only from above. Each fixed floor or cap from the config
(or the sample sheet) is applied together with the adaptive limit: the stricter of the two wins,
and thresholds.json records which one did.
"""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy.stats import median_abs_deviation

METRICS = (
    "total_counts",
    "n_genes_by_counts",
    "pct_counts_mt",
    "pct_counts_ribo",
    "pct_counts_hb",
    "pct_counts_in_top_20_genes",
)


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
    mt_prefix: str = "auto",
    ribo_prefixes: tuple[str, ...] | list[str] = ("RPS", "RPL"),
    hb_pattern: str = r"^HB[ABDEGMQZ][0-9]?$",
) -> ad.AnnData:
    """Add per-barcode QC metrics to obs and gene classes (mt, ribo, hb) to var, in place.

    A sample without mitochondrial genes gets pct_counts_mt = NaN and
    uns["qc_metric_notes"] says so; the % mito threshold is then skipped.
    """
    symbols = adata.var["gene_symbol"] if "gene_symbol" in adata.var else adata.var_names.to_series()
    symbols = pd.Index(symbols.astype(str))
    prefix = resolve_mt_prefix(symbols, mt_prefix)
    adata.var["mt"] = symbols.str.startswith(prefix) if prefix else np.zeros(adata.n_vars, dtype=bool)
    adata.var["ribo"] = symbols.str.upper().str.startswith(tuple(p.upper() for p in ribo_prefixes))
    pattern = re.compile(hb_pattern, flags=re.IGNORECASE)
    adata.var["hb"] = np.array([bool(pattern.match(s)) for s in symbols])
    n_top = min(20, adata.n_vars)
    sc.pp.calculate_qc_metrics(
        adata, qc_vars=["mt", "ribo", "hb"], percent_top=[n_top], log1p=True, inplace=True
    )
    if n_top != 20:
        adata.obs["pct_counts_in_top_20_genes"] = adata.obs.pop(f"pct_counts_in_top_{n_top}_genes")
    notes = {"mt_prefix": prefix}
    if prefix is None:
        adata.obs["pct_counts_mt"] = np.nan
        notes["pct_counts_mt"] = (
            f"no gene starts with the mitochondrial prefix ({mt_prefix}); % mitochondrial not computed"
        )
    adata.uns["qc_metric_notes"] = notes
    return adata


def mad_limits(values: np.ndarray, n_mads: float) -> tuple[float, float, float, float]:
    """(median, MAD, median - n*MAD, median + n*MAD) of the finite values."""
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


def compute_thresholds(obs: pd.DataFrame, qc_config: dict, overrides: dict | None = None) -> dict:
    """Thresholds for one sample and where each came from.

    `qc_config` is the config's qc block; `overrides` maps sheet columns (min_counts, min_genes,
    max_genes, max_pct_mt, n_mads, n_mads_mt) to numbers for this sample (None = not set).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    def setting(key: str, override_key: str | None = None) -> tuple[float | None, str]:
        override_key = override_key or key
        if override_key in overrides:
            return float(overrides[override_key]), f"sample sheet column {override_key}"
        value = qc_config.get(key)
        return (None if value is None else float(value)), f"config qc.{key}"

    n_mads_counts, n_mads_counts_source = setting("n_mads_counts", "n_mads")
    n_mads_genes, n_mads_genes_source = setting("n_mads_genes", "n_mads")
    n_mads_mt, n_mads_mt_source = setting("n_mads_mt")
    thresholds: dict = {}

    for metric, n_mads, n_source, floor_key, cap_key in (
        ("total_counts", n_mads_counts, n_mads_counts_source, "min_counts", None),
        ("n_genes_by_counts", n_mads_genes, n_mads_genes_source, "min_genes", "max_genes"),
    ):
        median, mad, low, high = mad_limits(np.log1p(obs[metric].to_numpy()), n_mads)
        adaptive_source = f"adaptive: median {n_mads:g} MADs on log1p ({n_source})"
        floor, floor_source = setting(floor_key)
        cap, cap_source = setting(cap_key) if cap_key else (None, "none")
        adaptive_low = float(np.expm1(low)) if np.isfinite(low) and mad > 0 else None
        adaptive_high = float(np.expm1(high)) if np.isfinite(high) and mad > 0 else None
        lower, lower_source = _combine(adaptive_low, floor, floor_source, "lower", adaptive_source)
        upper, upper_source = _combine(adaptive_high, cap, cap_source, "upper", adaptive_source)
        thresholds[metric] = {
            "median": float(np.expm1(median)) if np.isfinite(median) else None,
            "mad_log1p": mad,
            "n_mads": n_mads,
            "lower": lower,
            "lower_source": lower_source,
            "upper": upper,
            "upper_source": upper_source,
        }

    pct_mt = obs["pct_counts_mt"].to_numpy(dtype=float)
    cap, cap_source = setting("max_pct_mt")
    if np.all(np.isnan(pct_mt)):
        thresholds["pct_counts_mt"] = {
            "skipped": "no mitochondrial genes in this sample; % mitochondrial threshold not applied",
            "lower": None,
            "upper": None,
            "lower_source": "none",
            "upper_source": "none",
        }
    else:
        median, mad, _, high = mad_limits(pct_mt, n_mads_mt)
        # A MAD of 0 (e.g. almost no MT reads) would fail every cell above the median: no adaptive cap then.
        adaptive_high = high if mad > 0 else None
        adaptive_source = f"adaptive: median + {n_mads_mt:g} MADs ({n_mads_mt_source})"
        upper, upper_source = _combine(adaptive_high, cap, cap_source, "upper", adaptive_source)
        thresholds["pct_counts_mt"] = {
            "median": median,
            "mad": mad,
            "n_mads": n_mads_mt,
            "lower": None,
            "lower_source": "none",
            "upper": upper,
            "upper_source": upper_source,
        }
    return thresholds


FAIL_REASONS = {
    ("total_counts", "lower"): "low_counts",
    ("total_counts", "upper"): "high_counts",
    ("n_genes_by_counts", "lower"): "low_genes",
    ("n_genes_by_counts", "upper"): "high_genes",
    ("pct_counts_mt", "upper"): "high_pct_mt",
}


def apply_thresholds(obs: pd.DataFrame, thresholds: dict) -> tuple[pd.Series, pd.Series]:
    """Return (qc_pass, fail_reason): reasons joined by ';' in a fixed order, '' for passing cells."""
    reasons = pd.DataFrame(index=obs.index)
    for (metric, bound), reason in FAIL_REASONS.items():
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


def run_qc(adata: ad.AnnData, qc_config: dict, overrides: dict | None = None) -> tuple[ad.AnnData, dict]:
    """Metrics, thresholds and pass/fail for one sample; returns (adata with obs qc_pass/fail_reason, thresholds)."""
    annotate_qc_metrics(
        adata,
        mt_prefix=qc_config.get("mt_prefix", "auto"),
        ribo_prefixes=qc_config.get("ribo_prefixes", ["RPS", "RPL"]),
        hb_pattern=qc_config.get("hb_pattern", r"^HB[ABDEGMQZ][0-9]?$"),
    )
    thresholds = compute_thresholds(adata.obs, qc_config, overrides)
    qc_pass, fail_reason = apply_thresholds(adata.obs, thresholds)
    adata.obs["qc_pass"] = qc_pass.to_numpy()
    adata.obs["fail_reason"] = fail_reason.to_numpy()
    return adata, thresholds


CELL_TABLE_COLUMNS = (
    "barcode",
    "sample",
    *METRICS,
    "doublet_score",
    "predicted_doublet",
    "qc_pass",
    "pass",
    "fail_reason",
)


def finalise_sample(
    adata: ad.AnnData,
    doublet_action: str,
    min_cells_after_qc: int,
    failed_sample_policy: str,
    sample: str,
) -> tuple[ad.AnnData, pd.DataFrame, dict]:
    """Combine QC and doublet calls into the per-barcode table and the kept cells.

    `adata` holds every input barcode with obs qc_pass, fail_reason, doublet_score and
    predicted_doublet (NaN/False for barcodes that failed QC: Scrublet only sees passing cells).
    Returns (kept cells, cells table, status). With too few cells left the sample fails
    (InputError) or, under the drop policy, is marked dropped in status for the merge to skip.
    """
    from .errors import InputError

    obs = adata.obs
    doublet = obs["predicted_doublet"].fillna(False).astype(bool).to_numpy()
    fail_reason = obs["fail_reason"].astype(str).to_numpy().copy()
    if doublet_action == "remove":
        fail_reason = np.array(
            [
                ";".join(r for r in (reason, "doublet") if r) if d else reason
                for reason, d in zip(fail_reason, doublet, strict=True)
            ]
        )
    keep = fail_reason == ""
    table = obs.copy()
    table["fail_reason"] = fail_reason
    table["pass"] = keep
    table.insert(0, "barcode", obs.index.astype(str))
    table = table.loc[:, [c for c in CELL_TABLE_COLUMNS if c in table.columns]]

    reasons = pd.Series([r for reason in fail_reason for r in reason.split(";") if r]).value_counts()
    status = {
        "sample": sample,
        "n_cells_input": int(adata.n_obs),
        "n_cells_after_qc": int(obs["qc_pass"].sum()),
        "n_doublets": int(doublet.sum()),
        "n_cells_kept": int(keep.sum()),
        "removed_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "dropped": False,
    }
    if keep.sum() < min_cells_after_qc:
        message = (
            f"Sample {sample!r}: only {int(keep.sum())} of {adata.n_obs} cells pass QC and doublet removal, fewer "
            f"than qc.min_cells_after_qc ({min_cells_after_qc}); removed by reason: "
            f"{status['removed_by_reason'] or 'none'}."
        )
        if failed_sample_policy == "fail":
            raise InputError(
                f"{message} Loosen its thresholds with per-sample override columns in the sample sheet "
                "(min_genes, max_pct_mt, n_mads ...), remove the sample, or set qc.failed_sample_policy: drop."
            )
        status["dropped"] = True
        status["warning"] = (
            f"{message} The sample is dropped from the cohort (qc.failed_sample_policy: drop)."
        )
    kept = adata[keep].copy()
    for column in ("qc_pass", "fail_reason"):
        del kept.obs[column]
    kept.uns["qc_status"] = {k: v for k, v in status.items() if k != "removed_by_reason"}
    return kept, table, status
