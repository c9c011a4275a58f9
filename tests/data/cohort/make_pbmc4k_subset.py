"""Re-create pbmc4k_1200cells_4000genes.h5ad from the shared SoupX pbmc4k data (see PROVENANCE.txt).

Run from the repository root:  .venv/bin/python tests/data/cohort/make_pbmc4k_subset.py
"""

from pathlib import Path

import anndata as ad
import numpy as np

HERE = Path(__file__).parent
SOURCE = HERE.parents[3] / "shared" / "data" / "soupx_pbmc4k_subset" / "pbmc4k_soupx_2170cells_toc.h5ad"
if not SOURCE.exists():
    SOURCE = Path("/work/shared/data/soupx_pbmc4k_subset/pbmc4k_soupx_2170cells_toc.h5ad")
TARGET = HERE / "pbmc4k_1200cells_4000genes.h5ad"

full = ad.read_h5ad(SOURCE)
full = full[full.obs["Annotation"] != "?"]  # 20 cells the authors left unannotated
rng = np.random.default_rng(0)
cells = np.sort(rng.choice(full.n_obs, 1200, replace=False))
subset = full[cells].copy()
detected = np.asarray((subset.X > 0).sum(axis=0)).ravel()
genes = np.sort(np.argsort(-detected, kind="stable")[:4000])
subset = subset[:, genes].copy()
subset.obs = subset.obs[["Annotation"]].rename(columns={"Annotation": "cell_type"})
subset.obs["cell_type"] = subset.obs["cell_type"].astype(str).astype("category")
subset.X = subset.X.astype(np.float32)
subset.write_h5ad(TARGET, compression="gzip")
print(subset)
