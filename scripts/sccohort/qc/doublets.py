"""Per-sample doublet detection with Scrublet, on that sample's raw counts only.

Doublets form when two cells share a droplet of one 10x lane, so they are called per sample
(per lane); simulating doublets from a merged cohort would pair cells that never met.

Threshold: Scrublet's automatic threshold is the minimum between the two modes of the
simulated-doublet score histogram (skimage's threshold_minimum). When that histogram is not
bimodal, the automatic threshold either fails or lands inside the singlet mode and calls far
more doublets than can exist. In both cases the fallback `doublets.fallback_threshold` from the
config is used, and the reason is recorded: "not bimodal" when the automatic method failed,
"implausible" when it would call more than IMPLAUSIBLE_FACTOR times the expected rate (and
at least MIN_IMPLAUSIBLE_RATE of cells).
"""

from __future__ import annotations

import contextlib
import io
import logging

import anndata as ad
import numpy as np
import pandas as pd

from .metrics import finalise_sample

# 10x Chromium: about 0.8% doublets per 1,000 cells recovered (10x user guide, v3 chemistry).
RATE_PER_THOUSAND_CELLS = 0.008
MIN_EXPECTED_RATE = 0.001
MAX_EXPECTED_RATE = 0.3
IMPLAUSIBLE_FACTOR = 4.0
MIN_IMPLAUSIBLE_RATE = 0.1


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
    """Rule doublets_sample: Scrublet on the QC-passing cells of one sample, then its final outputs.

    Writes `cells_table` (every input barcode: metrics, doublet call, pass, fail_reason),
    `thresholds_json` (QC thresholds, the doublet call, status, notes) and `output` (the kept
    cells, raw counts, with uns["qc_status"] and uns["qc_thresholds"]).
    """
    from .. import runtime
    from ..sheet import sample_override

    adata = ad.read_h5ad(qc_h5ad)
    info = call_passing_doublets(
        adata,
        doublet_options=doublet_options,
        seed=seed,
        expected_rate_override=sample_override(sample_row, "expected_doublet_rate"),
    )
    if info.get("skipped"):
        log.warning("sample %s: %s", sample, info["skipped"])
    else:
        log.info(
            "sample %s: threshold %.3f (%s), %d doublets",
            sample,
            info["threshold"],
            info["threshold_source"],
            info["n_doublets"],
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
    thresholds = thresholds_record(adata, info, status, sample=sample)
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


def score_doublets(
    counts,
    *,
    expected_rate: float,
    seed: int = 0,
    n_prin_comps: int = 30,
    fallback_threshold: float = 0.25,
) -> tuple[pd.DataFrame, dict]:
    """Scrublet scores and calls for a cells x genes raw-count matrix.

    Returns a frame (doublet_score, predicted_doublet) in the row order of `counts` and a
    dict describing the call (threshold, its source, rates, simulated scores for the histogram).
    """
    import scrublet

    n_cells, n_genes = counts.shape
    n_prin_comps = int(min(n_prin_comps, n_cells - 1, n_genes - 1))
    scrub = scrublet.Scrublet(counts, expected_doublet_rate=expected_rate, random_state=seed)
    # Scrublet prints progress to stdout; keep it out of the rule's output.
    with contextlib.redirect_stdout(io.StringIO()):
        scores = scrub_doublets(scrub, n_prin_comps=n_prin_comps)
        automatic = scrub.call_doublets(verbose=False)
    info = {
        "expected_rate": expected_rate,
        "n_prin_comps": n_prin_comps,
        "simulated_scores": np.asarray(scrub.doublet_scores_sim_, dtype=float),
    }
    if automatic is None:
        threshold = fallback_threshold
        source = "fallback (config doublets.fallback_threshold): simulated score histogram not bimodal"
    else:
        threshold = float(scrub.threshold_)
        called_rate = float(np.mean(scores > threshold))
        if called_rate > max(IMPLAUSIBLE_FACTOR * expected_rate, MIN_IMPLAUSIBLE_RATE):
            source = (
                f"fallback (config doublets.fallback_threshold): automatic threshold {threshold:.3f} would call "
                f"{called_rate:.1%} of cells, implausible for an expected rate of {expected_rate:.1%}"
            )
            threshold = fallback_threshold
        else:
            source = "automatic (minimum between the modes of the simulated-doublet score histogram)"
    predicted = scores > threshold
    info.update(
        threshold=float(threshold),
        threshold_source=source,
        detected_rate=float(np.mean(predicted)),
        n_doublets=int(predicted.sum()),
    )
    frame = pd.DataFrame({"doublet_score": scores.astype(float), "predicted_doublet": predicted})
    return frame, info


def scrub_doublets(scrub, *, n_prin_comps: int = 30) -> np.ndarray:
    """Scrublet.scrub_doublets with its default settings and exact neighbours, step by step.

    The same calls in the same order, except the z-scoring of the observed and simulated cells:
    Scrublet's pipeline_zscore makes three dense copies of each (subtracting the mean, scaling
    through a sparse diagonal product, converting the matrix type), which was most of the
    job's peak memory (1.6 GB at 10,000 cells). Here each is densified once and scaled in place,
    with the same float64 operations, so the scores are identical (tests/qc/test_doublets.py).
    Returns the observed cells' doublet scores; the Scrublet object holds the rest.
    """
    import scrublet

    scrub._E_sim = None
    scrub._E_obs_norm = None
    scrub._E_sim_norm = None
    scrub._gene_filter = np.arange(scrub._E_obs.shape[1])
    scrublet.pipeline_normalize(scrub)
    scrublet.pipeline_get_gene_filter(scrub, min_counts=3, min_cells=3, min_gene_variability_pctl=85)
    scrublet.pipeline_apply_gene_filter(scrub)
    scrub.simulate_doublets(sim_doublet_ratio=scrub.sim_doublet_ratio, synthetic_doublet_umi_subsampling=1.0)
    scrublet.pipeline_normalize(scrub, postnorm_total=1e6)
    gene_means = np.asarray(scrub._E_obs_norm.mean(0)).ravel()
    gene_scales = 1 / np.sqrt(scrublet.sparse_var(scrub._E_obs_norm))
    scrub._E_obs_norm = _zscore_in_place(scrub._E_obs_norm, gene_means, gene_scales)
    scrub._E_sim_norm = _zscore_in_place(scrub._E_sim_norm, gene_means, gene_scales)
    scrublet.pipeline_pca(
        scrub, n_prin_comps=n_prin_comps, random_state=scrub.random_state, svd_solver="arpack"
    )
    # Exact neighbours: annoy's parallel index build is not reproducible across core counts.
    scrub.calculate_doublet_scores(
        use_approx_neighbors=False, distance_metric="euclidean", get_doublet_neighbor_parents=False
    )
    return scrub.doublet_scores_obs_


def _zscore_in_place(matrix, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    dense = matrix.toarray()
    dense -= means
    dense *= scales
    return dense


def call_doublets(
    adata: ad.AnnData,
    *,
    doublet_options: dict,
    n_cells_recovered: int,
    seed: int = 0,
    expected_rate_override: float | None = None,
) -> tuple[ad.AnnData, dict]:
    """Scrublet's calls for one sample's cells (raw counts in X); returns (adata, call info).

    Writes: obs["doublet_score"] (float, NaN when skipped) and obs["predicted_doublet"] (bool).
    `doublet_options` is the config's doublets block. Samples with fewer than its min_cells cells
    are skipped with a recorded warning: Scrublet's kNN classifier and PCA need a few hundred
    cells to mean anything.
    """
    if expected_rate_override is not None:
        expected_rate, rate_source = (
            float(expected_rate_override),
            "sample sheet column expected_doublet_rate",
        )
    elif doublet_options.get("expected_rate") is not None:
        expected_rate, rate_source = float(doublet_options["expected_rate"]), "config doublets.expected_rate"
    else:
        expected_rate = expected_doublet_rate(n_cells_recovered)
        rate_source = f"10x: 0.8% per 1,000 cells recovered ({n_cells_recovered} cells)"
    min_cells = int(doublet_options.get("min_cells", 200))
    info: dict = {"expected_rate": expected_rate, "expected_rate_source": rate_source}
    if adata.n_obs < min_cells:
        adata.obs["doublet_score"] = np.nan
        adata.obs["predicted_doublet"] = False
        info.update(
            skipped=(
                f"doublet calling skipped: {adata.n_obs} cells after QC, fewer than doublets.min_cells "
                f"({min_cells})"
            ),
            threshold=None,
            threshold_source="none",
            detected_rate=None,
            n_doublets=0,
            simulated_scores=np.array([]),
        )
        return adata, info
    frame, scored = score_doublets(
        adata.X,
        expected_rate=expected_rate,
        seed=seed,
        n_prin_comps=int(doublet_options.get("n_prin_comps", 30)),
        fallback_threshold=float(doublet_options.get("fallback_threshold", 0.25)),
    )
    scored.pop("expected_rate")
    info.update(scored)
    adata.obs["doublet_score"] = frame["doublet_score"].to_numpy()
    adata.obs["predicted_doublet"] = frame["predicted_doublet"].to_numpy()
    return adata, info


def call_passing_doublets(
    adata: ad.AnnData, *, doublet_options: dict, seed: int, expected_rate_override: float | None
) -> dict:
    """call_doublets on the barcodes that pass QC (obs["qc_pass"]); returns the call info.

    Writes: obs["doublet_score"] (NaN for barcodes that failed QC) and obs["predicted_doublet"]
    (False for them) for every barcode. The expected rate follows all barcodes recovered.
    """
    passing = adata[adata.obs["qc_pass"].to_numpy()].copy()
    passing, info = call_doublets(
        passing,
        doublet_options=doublet_options,
        n_cells_recovered=adata.n_obs,
        seed=seed,
        expected_rate_override=expected_rate_override,
    )
    adata.obs["doublet_score"] = np.nan
    adata.obs["predicted_doublet"] = False
    adata.obs.loc[passing.obs_names, "doublet_score"] = passing.obs["doublet_score"].to_numpy()
    adata.obs.loc[passing.obs_names, "predicted_doublet"] = passing.obs["predicted_doublet"].to_numpy()
    return info


def thresholds_record(adata: ad.AnnData, info: dict, status: dict, *, sample: str) -> dict:
    """The content of thresholds.json: uns["qc_thresholds"] and uns["qc_metric_notes"] of `adata`,
    the doublet call `info` and the sample's `status`.

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
        "notes": notes,
        "mt_prefix": adata.uns["qc_metric_notes"].get("mt_prefix"),
    }
