"""Data and builders of the annotation tests (tests/annotate/): real cells with published labels,
clustered here, and a CellTypist-format model trained on them.

All data are real cells with published labels, vendored under tests/data/annotation (see its
PROVENANCE.md): Kang et al. 2018 PBMC (control + IFN-beta), 10x pbmc4k with the SoupX authors'
annotation, and three lung adenocarcinoma cell lines (CellBench, CEL-seq2) planted among the PBMC.
Clusters are computed here (HVG -> PCA -> exact kNN -> Leiden, seeded); no label is hard-coded.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sccohort.counts import lognormalise, mean_var
from sccohort.names import leiden_key

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "annotation"
MARKERS = REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv"
REFERENCE = DATA / "kang_reference_6donors.h5ad"
RESOLUTION = 0.5
KEY = leiden_key(RESOLUTION)

# Published labels -> major types; each major type accepts the marker labels listed (a parent
# label such as T counts for all of its children).
KANG_MAJOR = {
    "CD4 T cells": "T",
    "CD8 T cells": "T",
    "NK cells": "NK",
    "B cells": "B",
    "CD14+ Monocytes": "Mono",
    "FCGR3A+ Monocytes": "Mono",
    "Dendritic cells": "DC",
    "Megakaryocytes": "Platelet",
}
SOUPX_MAJOR = {"T_CD4": "T", "T_CD8": "T", "NK": "NK", "B": "B", "MNP": "Myeloid"}
MARKER_MAJOR = {
    "CD4_T": "T",
    "CD8_T": "T",
    "T": "T",
    "NK": "NK",
    "B": "B",
    "Plasma": "B",
    "CD14_Mono": "Mono",
    "FCGR3A_Mono": "Mono",
    "Mono": "Mono",
    "cDC": "DC",
    "pDC": "DC",
    "DC": "DC",
    "Platelet": "Platelet",
    "Erythrocyte": "Erythrocyte",
}


def cluster(adata: ad.AnnData, resolution: float = RESOLUTION, seed: int = 0, n_pcs: int = 20, k: int = 15):
    """Log-normalise (library size over all genes of the source: obs total_counts), then the
    usual HVG -> scaled PCA -> kNN graph -> Leiden; writes X, layers['counts'], obsm['X_pca'],
    obsp['connectivities'] (the kNN graph) and obs[leiden_<res>]. Exact kNN (sklearn) keeps the test free of numba compilation."""
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import kneighbors_graph

    adata.layers["counts"] = adata.X.copy()
    adata.X = lognormalise(adata.X, adata.obs["total_counts"].to_numpy())
    mean, var = mean_var(adata.X, ddof=0)
    dispersion = np.divide(var, mean, out=np.zeros_like(mean), where=mean > 0.01)
    hvg = np.argsort(-dispersion)[:1000]
    scaled = adata.X[:, hvg].toarray()
    scaled = np.clip((scaled - scaled.mean(0)) / np.maximum(scaled.std(0), 1e-8), None, 10)
    adata.obsm["X_pca"] = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit_transform(
        scaled
    )
    graph = kneighbors_graph(adata.obsm["X_pca"], k, mode="connectivity")
    graph = sp.csr_matrix(((graph + graph.T) > 0).astype(np.float64))
    adata.obsp["connectivities"] = graph
    sc.tl.leiden(
        adata,
        resolution=resolution,
        adjacency=graph,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
        key_added=leiden_key(resolution),
    )
    return adata


def read(name: str, label_column: str) -> ad.AnnData:
    """A vendored data set with its published labels in obs["published"] (NaN where unlabelled)."""
    adata = ad.read_h5ad(DATA / name)
    adata.obs["published"] = adata.obs.pop(label_column).astype(str).replace("nan", np.nan)
    return adata


def major_accuracy(published: pd.Series, labels: pd.Series, published_major: dict) -> float:
    truth = published.map(published_major)
    called = labels.astype(str).map(MARKER_MAJOR)  # Unknown -> NaN -> counts as wrong
    keep = truth.notna()
    return float((called[keep] == truth[keep]).mean())


def train_celltypist_model(reference_path: Path, path: Path) -> Path:
    """A CellTypist model trained by celltypist.train on log1p counts per 10k of the reference's
    cells (no feature selection) and written with Model.write: the .pkl a user gives as
    annotation.celltypist_model. SGD logistic regression (use_SGD, seeded): celltypist 1.7.1's
    default solver passes multi_class, which scikit-learn 1.8 removed."""
    import os
    import tempfile

    os.environ.setdefault("CELLTYPIST_FOLDER", str(Path(tempfile.gettempdir()) / "sccohort-celltypist"))
    import celltypist

    reference = ad.read_h5ad(reference_path)
    query = ad.AnnData(
        X=lognormalise(reference.X),
        obs=reference.obs[["cell_type"]],
        var=pd.DataFrame(index=reference.var_names),
    )
    model = celltypist.train(
        query,
        labels="cell_type",
        feature_selection=False,
        use_SGD=True,
        n_jobs=1,
        max_iter=200,
        random_state=0,
    )
    model.write(str(path))
    return path


def plain_scanpy_labels(adata: ad.AnnData, sets: dict, *, cluster_key: str, seed: int = 0) -> pd.Series:
    """The plain alternative: scanpy's score_genes for each marker set (log-normalised X; sets
    with no gene in the data are skipped), the mean score per cluster of `cluster_key`, and each
    cluster's best set for all of its cells."""
    import scanpy as sc

    light = ad.AnnData(
        X=adata.X, obs=adata.obs[[cluster_key]].copy(), var=pd.DataFrame(index=adata.var_names)
    )
    columns = []
    for name, genes in sets.items():
        genes = [g for g in genes if g in light.var_names]
        if genes:
            sc.tl.score_genes(light, genes, score_name=f"plain_{name}", random_state=seed)
            columns.append(f"plain_{name}")
    means = light.obs.groupby(cluster_key, observed=True)[columns].mean()
    best = means.idxmax(axis=1).str.slice(len("plain_"))
    return light.obs[cluster_key].map(best).astype(str)
