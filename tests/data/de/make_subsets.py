"""Rebuild the vendored DE test data from /work/shared/data/kang2018_ifnb_subsets (see PROVENANCE.md).

Run from the repository root: .venv/bin/python tests/data/de/make_subsets.py
"""

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

SOURCE = Path(__file__).resolve().parents[4] / "shared" / "data" / "kang2018_ifnb_subsets"
OUT = Path(__file__).resolve().parent
SEED = 0


def main() -> None:
    rng = np.random.default_rng(SEED)

    # 1) 8 control donors, 3 published cell types, at most 150 cells per donor x type.
    src = ad.read_h5ad(SOURCE / "kang_ctrl_8donors_1287genes_muscat_kang_se.h5ad")
    types = ["CD14+ Monocytes", "B cells", "CD4 T cells"]
    keep = []
    for (_donor, cell_type), idx in src.obs.groupby(["donor", "cell_type"], observed=True).indices.items():
        if cell_type in types:
            keep.extend(sorted(rng.choice(idx, size=min(150, len(idx)), replace=False)))
    sub = src[np.sort(keep)].copy()
    # Genes detected in at least 1% of the kept cells.
    detected = np.asarray((sub.X > 0).sum(axis=0)).ravel() >= 0.01 * sub.n_obs
    sub = sub[:, detected].copy()
    sub.X = sp.csr_matrix(sub.X.astype(np.float32))
    sub.obs = sub.obs[["donor", "cell_type"]].astype("category")
    sub.obs["condition"] = "ctrl"
    sub.var = sub.var[["gene_ids"]]
    sub.write_h5ad(OUT / "kang_ctrl_8donors_3types.h5ad", compression="gzip")
    print(sub)

    # 2) The paired 2 donors x ctrl/stim subset, as distributed (all cells, all genes).
    paired = ad.read_h5ad(SOURCE / "kang_4samples_2ctrl2stim_1267genes_muscat_example_sce.h5ad")
    paired.X = sp.csr_matrix(paired.X.astype(np.float32))
    paired.obs = paired.obs[["sample_id", "donor", "condition", "cell_type"]].astype("category")
    paired.write_h5ad(OUT / "kang_paired_2donors_ctrl_stim.h5ad", compression="gzip")
    print(paired)


if __name__ == "__main__":
    main()
