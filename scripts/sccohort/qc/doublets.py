"""Per-sample doublet detection on that sample's raw counts only.

Doublets form when two cells share a droplet of one 10x lane, so they are called per sample
(per lane); simulating doublets from a merged cohort would pair cells that never met.

doublets.method consensus (default): doublet_score is the consensus of Scrublet and a
cluster-mixture score, with library size where the sample supports it (qc/doublet_scores.py);
cells.tsv.gz also keeps each part (doublet_score_scrublet, doublet_score_mixture). method
scrublet: Scrublet's score and automatic threshold alone, as in earlier versions.

Who is scored: the cells that pass QC and those failing only the upper limits on counts or genes
(oversized cells are doublet candidates: they keep their QC reason and get a score too).

The expected doublet rate: a sheet column expected_doublet_rate or doublets.expected_rate when
set; otherwise estimated from the data as Scrublet does (cells above its automatic threshold /
simulated doublets above it), because the 10x formula (0.8% per 1,000 cells recovered) assumes
the input is a whole lane, which a subsampled or pre-filtered matrix is not; the formula is the
fallback when Scrublet finds no threshold or the estimate is implausible. thresholds.json
records both and which one was used, and why.

Calls (consensus): the doublets.call_share x rate x cells most doublet-like cells by expression
evidence. The share is below 1 because homotypic doublets (two cells of one type) cannot be told
from singlets by expression, and real samples hold real doublets among the "singlets": on
planted-truth PBMC samples call_share 0.3 removed 15-40% of the planted doublets while costing
0.6-1.5% of the other cells.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np

from . import doublet_scores
from .fate import finalise_sample, removal_warnings

# 10x Chromium: about 0.8% doublets per 1,000 cells recovered (10x user guide, v3 chemistry).
RATE_PER_THOUSAND_CELLS = 0.008
MIN_EXPECTED_RATE = 0.001
MAX_EXPECTED_RATE = 0.3
# A data estimate outside these bounds, or from too few detectable simulated doublets, is not used.
MIN_ESTIMATED_RATE = 0.002
MAX_ESTIMATED_RATE = 0.5
MIN_DETECTABLE_FRACTION = 0.05
IMPLAUSIBLE_FACTOR = 4.0
MIN_IMPLAUSIBLE_RATE = 0.1
METHODS = ("consensus", "scrublet")
# QC reasons that still let a barcode be scored for doublets (oversized cells are candidates).
SCORED_DESPITE = frozenset({"high_counts", "high_genes"})


def doublets_sample(
    *,
    qc_h5ad: str,
    output: str,
    cells_table: str,
    thresholds_json: str,
    sample: str,
    sample_row: dict,
    qc_options: dict,
    doublet_options: dict,
    seed: int,
    log: logging.Logger,
) -> None:
    """Rule doublets_sample: doublet scores and calls for one sample, then its final outputs.

    Writes `cells_table` (every input barcode: metrics, doublet scores and call, pass,
    fail_reason), `thresholds_json` (QC thresholds, the doublet call, status, warnings, notes) and
    `output` (the kept cells, raw counts, with uns["qc_status"] and uns["qc_thresholds"]).
    """
    from .. import runtime
    from ..sheet import sample_override

    adata = ad.read_h5ad(qc_h5ad)
    info = call_sample_doublets(
        adata,
        doublet_options=doublet_options,
        seed=seed,
        expected_rate_override=sample_override(sample_row, "expected_doublet_rate"),
    )
    if info.get("skipped"):
        log.warning("sample %s: %s", sample, info["skipped"])
    else:
        log.info(
            "sample %s: expected doublet rate %.2f%% (%s); %d doublets called (%s)",
            sample,
            100 * info["expected_rate"],
            info["expected_rate_source"],
            info["n_doublets"],
            info["threshold_source"],
        )
    kept, cells, status = finalise_sample(
        adata,
        doublet_action=doublet_options["action"],
        min_cells_after_qc=qc_options["min_cells_after_qc"],
        failed_sample_policy=qc_options["failed_sample_policy"],
        sample=sample,
    )
    if status.get("warning"):
        log.warning("%s", status["warning"])
    warnings = removal_warnings(status, limit=qc_options.get("warn_removed_fraction"))
    for warning in warnings:
        log.warning("%s", warning["message"])
    thresholds = thresholds_record(adata, info, status, sample=sample, warnings=warnings)
    kept.uns["qc_thresholds"] = {
        "qc": adata.uns["qc_thresholds"],
        "doublets": {k: v for k, v in info.items() if k != "simulated_histogram"},
    }
    kept.uns.pop("qc_metric_notes", None)
    runtime.write_table(cells, cells_table)
    runtime.write_json(thresholds, thresholds_json)
    runtime.write_h5ad(kept, output)
    log.info("sample %s: kept %d of %d cells", sample, status["n_cells_kept"], status["n_cells_input"])


def expected_doublet_rate(n_cells_recovered: int) -> float:
    """Expected doublet rate for a 10x lane that recovered `n_cells_recovered` cells."""
    rate = RATE_PER_THOUSAND_CELLS * n_cells_recovered / 1000
    return float(np.clip(rate, MIN_EXPECTED_RATE, MAX_EXPECTED_RATE))


def estimated_doublet_rate(observed: np.ndarray, simulated: np.ndarray, threshold: float | None):
    """(rate or None, note): Scrublet's estimate, the share of cells above `threshold` divided by
    the share of simulated doublets above it (the detectable fraction)."""
    if threshold is None:
        return None, "Scrublet found no threshold (simulated-score histogram not bimodal)"
    detected = float(np.mean(observed > threshold))
    detectable = float(np.mean(simulated > threshold)) if len(simulated) else 0.0
    if detectable < MIN_DETECTABLE_FRACTION:
        return None, f"only {detectable:.1%} of simulated doublets lie above Scrublet's threshold"
    rate = detected / detectable
    note = (
        f"{detected:.2%} of cells above Scrublet's threshold {threshold:.3f} / {detectable:.1%} of simulated "
        f"doublets above it = {rate:.2%}"
    )
    if not MIN_ESTIMATED_RATE <= rate <= MAX_ESTIMATED_RATE:
        return None, f"{note}: implausible, not used"
    return rate, note


def choose_rate(
    doublet_options: dict, *, override: float | None, estimate: float | None, n_cells_recovered: int
) -> tuple[float, str, str]:
    """(rate, source, kind): sheet override, config, data estimate, then the 10x formula."""
    if override is not None:
        return float(override), "sample sheet column expected_doublet_rate", "sheet"
    if doublet_options.get("expected_rate") is not None:
        return float(doublet_options["expected_rate"]), "config doublets.expected_rate", "config"
    if estimate is not None:
        return float(estimate), "estimated from the data (Scrublet's detected / detectable)", "data"
    return (
        expected_doublet_rate(n_cells_recovered),
        f"10x: 0.8% per 1,000 cells recovered ({n_cells_recovered} cells), no usable data estimate",
        "formula",
    )


def call_doublets(
    adata: ad.AnnData,
    *,
    doublet_options: dict,
    n_cells_recovered: int,
    seed: int = 0,
    expected_rate_override: float | None = None,
) -> tuple[ad.AnnData, dict]:
    """Doublet scores and calls for one sample's cells (raw counts in X); returns (adata, info).

    Writes: obs["doublet_score"] (float, NaN when skipped), obs["predicted_doublet"] (bool), and
    obs["doublet_score_scrublet"], obs["doublet_score_mixture"] (consensus; the mixture score is
    the log-likelihood gain per UMI). `doublet_options` is the config's doublets block. Samples
    with fewer than its min_cells cells are skipped with a recorded warning.
    """
    method = doublet_options.get("method", "consensus")
    if method not in METHODS:
        raise ValueError(f"doublets.method must be one of {', '.join(METHODS)}, not {method!r}")
    formula = expected_doublet_rate(n_cells_recovered)
    info: dict = {
        "method": method,
        "expected_rate_formula": formula,
        "n_cells_recovered": int(n_cells_recovered),
    }
    for column in ("doublet_score", "doublet_score_scrublet", "doublet_score_mixture"):
        adata.obs[column] = np.nan
    adata.obs["predicted_doublet"] = False
    min_cells = int(doublet_options.get("min_cells", 200))
    if adata.n_obs < min_cells:
        rate, source, _ = choose_rate(
            doublet_options,
            override=expected_rate_override,
            estimate=None,
            n_cells_recovered=n_cells_recovered,
        )
        info.update(
            expected_rate=rate,
            expected_rate_source=source,
            skipped=f"doublet calling skipped: {adata.n_obs} cells scored, fewer than doublets.min_cells ({min_cells})",
            threshold=None,
            threshold_source="none",
            detected_rate=None,
            n_doublets=0,
            simulated_scores=np.array([]),
        )
        return adata, info
    scrublet, scrublet_info = doublet_scores.scrublet_scores(
        adata.X, seed=seed, n_prin_comps=int(doublet_options.get("n_prin_comps", 30))
    )
    estimate, note = estimated_doublet_rate(
        scrublet, scrublet_info["simulated_scores"], scrublet_info["threshold"]
    )
    rate, source, kind = choose_rate(
        doublet_options,
        override=expected_rate_override,
        estimate=estimate,
        n_cells_recovered=n_cells_recovered,
    )
    info.update(
        expected_rate=rate,
        expected_rate_source=source,
        expected_rate_used=kind,
        expected_rate_estimated=estimate,
        expected_rate_estimate_note=note,
        n_prin_comps=scrublet_info["n_prin_comps"],
        simulated_scores=scrublet_info["simulated_scores"],
    )
    adata.obs["doublet_score_scrublet"] = scrublet
    if method == "scrublet":
        score, called = _scrublet_calls(scrublet, scrublet_info, rate, doublet_options, info)
    else:
        score, called = _consensus_calls(adata, scrublet, scrublet_info, rate, doublet_options, info, seed)
    adata.obs["doublet_score"] = score
    adata.obs["predicted_doublet"] = called
    info.update(detected_rate=float(np.mean(called)), n_doublets=int(called.sum()))
    return adata, info


def _scrublet_calls(scrublet, scrublet_info, rate, doublet_options, info):
    """Scrublet's score and automatic threshold, or doublets.fallback_threshold when there is none
    or it would call more than IMPLAUSIBLE_FACTOR times the expected rate."""
    fallback = float(doublet_options.get("fallback_threshold", 0.25))
    threshold = scrublet_info["threshold"]
    if threshold is None:
        threshold, source = (
            fallback,
            "fallback (config doublets.fallback_threshold): simulated score histogram not bimodal",
        )
    else:
        called_rate = float(np.mean(scrublet > threshold))
        if called_rate > max(IMPLAUSIBLE_FACTOR * rate, MIN_IMPLAUSIBLE_RATE):
            source = (
                f"fallback (config doublets.fallback_threshold): automatic threshold {threshold:.3f} would call "
                f"{called_rate:.1%} of cells, implausible for an expected rate of {rate:.1%}"
            )
            threshold = fallback
        else:
            source = "automatic (minimum between the modes of the simulated-doublet score histogram)"
    info.update(threshold=float(threshold), threshold_source=source)
    return scrublet, scrublet > threshold


def _consensus_calls(adata, scrublet, scrublet_info, rate, doublet_options, info, seed):
    """The consensus score; calls: the call_share x rate x cells highest expression scores."""
    resolution = float(doublet_options.get("cluster_resolution", 0.3))
    embedding, clusters = doublet_scores.expression_embedding(adata.X, seed=seed, resolution=resolution)
    mixture, alpha = doublet_scores.mixture_scores(adata.X, clusters, scrublet)
    size = doublet_scores.size_residual(adata.X, embedding)
    share = float(doublet_options.get("call_share", 0.3))
    n_called = int(round(share * rate * adata.n_obs))
    score, expression, weight, rho = doublet_scores.consensus(scrublet, mixture, size, n_called=n_called)
    threshold = float(np.sort(expression)[::-1][n_called - 1]) if n_called > 0 else float("inf")
    called = expression >= threshold
    adata.obs["doublet_score_mixture"] = mixture
    info.update(
        threshold=threshold if n_called > 0 else None,
        threshold_source=(
            f"the {n_called} cells with the most expression evidence: doublets.call_share {share:g} x expected "
            f"rate {rate:.2%} x {adata.n_obs} cells"
        ),
        call_share=share,
        n_clusters=int(len(np.unique(clusters))),
        cluster_resolution=resolution,
        size_evidence={
            "weight": weight,
            "spearman_mixture_size": rho,
            "gate": list(doublet_scores.SIZE_GATE),
            "note": "library size counts as doublet evidence in proportion to weight (0: not used)",
        },
        scrublet={
            "threshold": scrublet_info["threshold"],
            "n_above_threshold": None
            if scrublet_info["threshold"] is None
            else int(np.sum(scrublet > scrublet_info["threshold"])),
        },
        median_mixture_alpha_called=float(np.median(alpha[called])) if called.any() else None,
    )
    return score, called


def scored_barcodes(adata: ad.AnnData, *, method: str) -> np.ndarray:
    """Barcodes scored for doublets: passing QC, and (consensus) failing only upper limits."""
    passing = adata.obs["qc_pass"].to_numpy(dtype=bool)
    if method == "scrublet":
        return passing
    # astype(str) first: fail_reason may be categorical (fillna("") on it raises)
    reasons = adata.obs["fail_reason"].astype(str).replace({"nan": ""})
    oversized = reasons.map(lambda r: bool(r) and set(r.split(";")) <= SCORED_DESPITE).to_numpy(dtype=bool)
    return passing | oversized


def call_sample_doublets(
    adata: ad.AnnData, *, doublet_options: dict, seed: int, expected_rate_override: float | None
) -> dict:
    """call_doublets on the scored barcodes (scored_barcodes); returns the call info.

    Writes, for every barcode: obs["doublet_score"], obs["doublet_score_scrublet"],
    obs["doublet_score_mixture"] (NaN where not scored) and obs["predicted_doublet"] (False
    there). The 10x formula rate follows all barcodes recovered.
    """
    scored = scored_barcodes(adata, method=doublet_options.get("method", "consensus"))
    subset = adata[scored].copy()
    subset, info = call_doublets(
        subset,
        doublet_options=doublet_options,
        n_cells_recovered=adata.n_obs,
        seed=seed,
        expected_rate_override=expected_rate_override,
    )
    info["n_cells_scored"] = int(scored.sum())
    for column in ("doublet_score", "doublet_score_scrublet", "doublet_score_mixture"):
        adata.obs[column] = np.nan
        adata.obs.loc[subset.obs_names, column] = subset.obs[column].to_numpy()
    adata.obs["predicted_doublet"] = False
    adata.obs.loc[subset.obs_names, "predicted_doublet"] = subset.obs["predicted_doublet"].to_numpy()
    return info


def thresholds_record(
    adata: ad.AnnData, info: dict, status: dict, *, sample: str, warnings: list | None = None
) -> dict:
    """The content of thresholds.json: uns["qc_thresholds"] and uns["qc_metric_notes"] of `adata`,
    the doublet call `info`, the sample's `status` and `warnings` (fate.removal_warnings).

    `info`'s simulated scores are replaced (in place) by their histogram on [0, 1] in 50 bins,
    which is what the QC page draws.
    """
    simulated = info.pop("simulated_scores")
    counts, edges = np.histogram(simulated, bins=np.linspace(0, 1, 51)) if len(simulated) else ([], [])
    info["simulated_histogram"] = {"counts": list(map(int, counts)), "edges": list(map(float, edges))}
    notes = [str(v) for k, v in adata.uns["qc_metric_notes"].items() if k != "mt_prefix" and v]
    return {
        "sample": sample,
        "qc": adata.uns["qc_thresholds"],
        "doublets": info,
        "status": status,
        "warnings": list(warnings or []),
        "notes": notes,
        "mt_prefix": adata.uns["qc_metric_notes"].get("mt_prefix"),
    }
