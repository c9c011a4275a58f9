"""Rule doublets_sample: Scrublet on the QC-passing cells of one sample, then the sample's final outputs."""

from sccohort.runtime import run_rule


def main(smk, log):
    import anndata as ad
    import numpy as np
    from sccohort import doublets, qc, runtime
    from sccohort.sheet import sample_override

    sample = smk.wildcards.sample
    adata = ad.read_h5ad(smk.input.h5ad)
    passing = adata[adata.obs["qc_pass"].to_numpy()].copy()
    passing, info = doublets.call_doublets(
        passing,
        smk.params.doublets,
        n_cells_recovered=adata.n_obs,
        seed=smk.params.seed,
        expected_rate_override=sample_override(smk.params.sample_row, "expected_doublet_rate"),
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
    adata.obs["doublet_score"] = np.nan
    adata.obs["predicted_doublet"] = False
    adata.obs.loc[passing.obs_names, "doublet_score"] = passing.obs["doublet_score"].to_numpy()
    adata.obs.loc[passing.obs_names, "predicted_doublet"] = passing.obs["predicted_doublet"].to_numpy()

    kept, cells, status = qc.finalise_sample(
        adata,
        doublet_action=smk.params.doublets["action"],
        min_cells_after_qc=smk.params.qc["min_cells_after_qc"],
        failed_sample_policy=smk.params.qc["failed_sample_policy"],
        sample=sample,
    )
    if status.get("warning"):
        log.warning("%s", status["warning"])
    simulated = info.pop("simulated_scores")
    counts, edges = np.histogram(simulated, bins=np.linspace(0, 1, 51)) if len(simulated) else ([], [])
    info["simulated_histogram"] = {"counts": list(map(int, counts)), "edges": list(map(float, edges))}
    notes = [str(v) for k, v in adata.uns["qc_metric_notes"].items() if k != "mt_prefix" and v]
    thresholds = {
        "sample": sample,
        "qc": adata.uns["qc_thresholds"],
        "doublets": info,
        "status": status,
        "notes": notes,
        "mt_prefix": adata.uns["qc_metric_notes"].get("mt_prefix"),
    }
    kept.uns["qc_thresholds"] = {
        "qc": adata.uns["qc_thresholds"],
        "doublets": {k: v for k, v in info.items() if k != "simulated_histogram"},
    }
    kept.uns.pop("qc_metric_notes", None)
    runtime.write_table(cells, smk.output.cells)
    runtime.write_json(thresholds, smk.output.thresholds)
    runtime.write_h5ad(kept, smk.output.h5ad)
    log.info("sample %s: kept %d of %d cells", sample, status["n_cells_kept"], status["n_cells_input"])


run_rule(main, snakemake)  # noqa: F821
