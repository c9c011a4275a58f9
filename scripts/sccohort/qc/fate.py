"""The fate of every barcode of one sample: the cells table, the kept cells, the status and the
warnings about filters that removed a large share of the sample.

finalise_sample joins the QC reasons (qc/metrics.py) and the doublet calls (qc/doublets.py) into
cells.tsv.gz's fail_reason; removal_warnings names each filter that removed more than
qc.warn_removed_fraction of the sample's barcodes, with the numbers, for the log, the sample's
page and thresholds.json["warnings"] (which the QC summary and the report show).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from .metrics import DOUBLET_REASON, METRICS

CELL_TABLE_COLUMNS = (
    "barcode",
    "sample",
    *METRICS,
    "pct_counts_other_species",
    "damage_z_mt",
    "damage_z_counts",
    "doublet_score",
    "doublet_score_scrublet",
    "doublet_score_mixture",
    "predicted_doublet",
    "qc_pass",
    "pass",
    "fail_reason",
)


def finalise_sample(
    adata: ad.AnnData,
    *,
    doublet_action: str,
    min_cells_after_qc: int,
    failed_sample_policy: str,
    sample: str,
) -> tuple[ad.AnnData, pd.DataFrame, dict]:
    """Combine QC and doublet calls into the per-barcode table and the kept cells.

    `adata` holds every input barcode with obs qc_pass, fail_reason, doublet_score and
    predicted_doublet (NaN/False for barcodes that were not scored for doublets).
    Returns (kept cells, cells table, status). With too few cells left the sample fails
    (InputError) or, under the drop policy, is marked dropped in status for the merge to skip.
    Writes (into the kept cells, a copy): obs without qc_pass and fail_reason, uns["qc_status"]
    (status without removed_by_reason).
    """
    obs = adata.obs
    doublet = obs["predicted_doublet"].fillna(False).astype(bool).to_numpy()
    fail_reason = obs["fail_reason"].astype(str).to_numpy().copy()
    if doublet_action == "remove":
        fail_reason = np.array(
            [
                ";".join(r for r in (reason, DOUBLET_REASON) if r) if d else reason
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
        _too_few_cells(status, min_cells_after_qc, failed_sample_policy)
    kept = adata[keep].copy()
    for column in ("qc_pass", "fail_reason"):
        del kept.obs[column]
    kept.uns["qc_status"] = {k: v for k, v in status.items() if k != "removed_by_reason"}
    return kept, table, status


def _too_few_cells(status: dict, min_cells_after_qc: int, failed_sample_policy: str) -> None:
    """Fail the sample (InputError) or, under the drop policy, mark `status` dropped with a warning."""
    message = (
        f"Sample {status['sample']!r}: only {status['n_cells_kept']} of {status['n_cells_input']} cells pass QC "
        f"and doublet removal, fewer than qc.min_cells_after_qc ({min_cells_after_qc}); removed by reason: "
        f"{status['removed_by_reason'] or 'none'}."
    )
    if failed_sample_policy == "fail":
        if status["n_cells_input"] < min_cells_after_qc:  # no threshold to loosen
            advice = "Its input holds too few cells: check the sample sheet's path, remove the sample"
        else:
            advice = (
                "Loosen its thresholds with per-sample override columns in the sample sheet "
                "(min_genes, max_pct_mt, n_mads ...), remove the sample"
            )
        raise InputError(f"{message} {advice}, or set qc.failed_sample_policy: drop.")
    status["dropped"] = True
    status["warning"] = f"{message} The sample is dropped from the cohort (qc.failed_sample_policy: drop)."


def removal_warnings(status: dict, *, limit: float | None) -> list[dict]:
    """One warning per removal reason that removed more than `limit` (a share, e.g. 0.2) of the
    sample's barcodes: {"reason", "removed", "cells_in", "fraction", "limit", "message"}."""
    if limit is None:
        return []
    n_in = max(int(status["n_cells_input"]), 1)
    found = []
    for reason, removed in status.get("removed_by_reason", {}).items():
        fraction = removed / n_in
        if fraction > limit:
            found.append(
                {
                    "reason": reason,
                    "removed": int(removed),
                    "cells_in": int(status["n_cells_input"]),
                    "fraction": round(fraction, 4),
                    "limit": float(limit),
                    "message": (
                        f"Sample {status['sample']}: {reason} removed {removed:,} of {status['n_cells_input']:,} "
                        f"cells ({fraction:.1%}), more than qc.warn_removed_fraction ({limit:.0%}). Check "
                        "the thresholds on its QC page; per-sample overrides go in the sample sheet."
                    ),
                }
            )
    return found
