"""What the whole-workflow accuracy tests share (test_workflow_accuracy*.py, one module per data
set so that pytest-xdist runs their workflow runs side by side): the published labels mapped to
the shipped table's types, the project writer and the comparison with the plain alternative.

Each data set is cut into samples, run from the counts to results/cohort/integrated.h5ad with the
default config, as a new user would, and every cell's label compared with its published one
(Unknown and parent labels such as T count as wrong). The same cells are also labelled by the
plain alternative (scanpy's score_genes per marker set, mean per Leiden cluster at resolution 1,
the best set) on the workflow's own clusters.

Data (tests/data/annotation, PROVENANCE.md): Kang et al. 2018 control and IFN-beta PBMC from
muscat (2 donors x 2 conditions, 1,556 cells; 8 control donors, 250 cells each), and 10x pbmc4k
with the SoupX authors' labels (2,170 cells, two halves).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml
from annotate.annotation_data import DATA, plain_scanpy_labels
from helpers import REPO, run_workflow

# Published labels -> the shipped table's types.
KANG_FINE = {
    "CD4 T cells": "CD4_T",
    "CD8 T cells": "CD8_T",
    "NK cells": "NK",
    "B cells": "B",
    "CD14+ Monocytes": "CD14_Mono",
    "FCGR3A+ Monocytes": "FCGR3A_Mono",
    "Dendritic cells": "cDC",
    "Megakaryocytes": "Platelet",
}
# SoupX authors' clusters -> types: their MNP label covers classical monocytes (cluster 0),
# non-classical monocytes (9, FCGR3A/CDKN1C) and cDC (10, FCER1A/CD1C); "?" (11) are pDC
# (LILRA4); their NK label covers NK cells (8) and cluster 6, CD3+ (94% CD3D), TRDC+/TRGC+ and
# KLRB1+ gamma-delta and MAIT T cells, which carry T-cell markers and no KLRF1/FCER1G: counted
# as right when labelled CD8_T (the cytotoxic T cells of the table) or NK.
SOUPX_FINE = {
    "0": "CD14_Mono",
    "9": "FCGR3A_Mono",
    "10": "cDC",
    "11": "pDC",
    "1": "CD4_T",
    "2": "CD4_T",
    "3": "CD8_T",
    "5": "CD8_T",
    "4": "B",
    "7": "B",
    "8": "NK",
}
SOUPX_T_CLUSTER_CALLED_NK = "6"
# The plain alternative's marker sets (scanpy PBMC3k tutorial markers, with CD4/CCR7 for CD4 T).
PLAIN_SETS = {
    "CD4_T": ["IL7R", "CD4", "CCR7"],
    "CD8_T": ["CD8A", "CD8B"],
    "NK": ["GNLY", "NKG7", "KLRF1"],
    "B": ["MS4A1", "CD79A"],
    "CD14_Mono": ["CD14", "LYZ"],
    "FCGR3A_Mono": ["FCGR3A", "MS4A7"],
    "cDC": ["FCER1A", "CST3"],
    "Platelet": ["PPBP"],
}


def write_project(
    root: Path, parts: dict[str, ad.AnnData], sheet: pd.DataFrame, *, de: dict | None = None
) -> Path:
    """A runnable project: one .h5ad of raw counts per sample, the sheet and the default config
    (DE off: no contrast, unless `de` gives the DE options to change, contrasts included)."""
    (root / "data").mkdir(parents=True)
    (root / "config").mkdir()
    for sample, adata in parts.items():
        ad.AnnData(
            X=sp.csr_matrix(adata.X, dtype=np.float32),
            obs=pd.DataFrame(index=adata.obs_names),
            var=pd.DataFrame(index=adata.var_names),
        ).write_h5ad(root / "data" / f"{sample}.h5ad")
    sheet.assign(path=[f"data/{s}.h5ad" for s in sheet["sample"]]).to_csv(
        root / "config" / "samples.tsv", sep="\t", index=False
    )
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples"] = "config/samples.tsv"
    config["de"]["contrasts"] = []
    config["de"].update(de or {})
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def run_and_compare(
    root: Path, truth: pd.Series, *, accept: dict | None = None, targets: tuple[str, ...] = ()
) -> dict:
    """Run the workflow to integrated.h5ad (and `targets`); (ours, plain) fine-level accuracy over
    the cells kept (truth indexed by the cohort's cell id "<sample>_<barcode>"); `accept`: cell id
    -> further labels counted as right."""
    run_workflow(root, "results/cohort/integrated.h5ad", *targets)
    adata = ad.read_h5ad(root / "results" / "cohort" / "integrated.h5ad")
    truth = truth.reindex(adata.obs_names)
    keep = truth.notna().to_numpy()
    ours = adata.obs["cell_type"].astype(str)
    plain = plain_scanpy_labels(adata, PLAIN_SETS, cluster_key="leiden_1.0")
    accept = accept or {}

    def right(labels: pd.Series) -> np.ndarray:
        hit = (labels == truth).to_numpy()
        for cell, allowed in accept.items():
            if cell in labels.index:
                hit[labels.index.get_loc(cell)] |= labels[cell] in allowed
        return hit[keep]

    table = pd.crosstab(truth[keep], ours[keep])
    return {"ours": right(ours).mean(), "plain": right(plain).mean(), "table": table, "adata": adata}


def read_pbmc4k() -> ad.AnnData:
    """The vendored pbmc4k counts (uint16 CSR in HDF5, see make_test_data.py) as an AnnData."""
    with h5py.File(DATA / "pbmc4k_soupx_2170cells.h5", "r") as handle:
        parts = {name: handle[name][:] for name in handle}
    counts = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=tuple(parts["shape"]))
    obs = pd.DataFrame(
        {"annotation": parts["annotation"].astype(str), "cluster": parts["cluster"].astype(str)},
        index=parts["barcodes"].astype(str),
    )
    return ad.AnnData(
        X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=parts["genes"].astype(str))
    )
