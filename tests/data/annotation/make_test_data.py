"""Rebuild the vendored annotation test data from /work/shared/data (see PROVENANCE.md).

Run from the repository root: .venv/bin/python tests/data/annotation/make_test_data.py [shared_data_dir]
Every subset is seeded; gene subsets keep every gene of the shipped marker table that the source
has, plus the most variable genes, and obs total_counts keeps each cell's library size over ALL
genes of the source so the subsets normalise as the full data would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SHARED = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data"
MARKERS = pd.read_csv(REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv", sep="\t")
SEED = 0


def lognorm(counts):
    counts = sp.csr_matrix(counts, dtype=np.float32)
    size = np.asarray(counts.sum(axis=1)).ravel()
    out = sp.diags((1e4 / np.maximum(size, 1)).astype(np.float32)) @ counts
    out = sp.csr_matrix(out)
    np.log1p(out.data, out=out.data)
    return out


def top_variable(counts, n):
    x = lognorm(counts)
    mean = np.asarray(x.mean(axis=0)).ravel()
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    dispersion = np.divide(var, mean, out=np.zeros_like(mean), where=mean > 0.01)
    return np.argsort(-dispersion)[:n]


def keep_genes(adata, n_variable):
    chosen = set(top_variable(adata.X, n_variable)) | set(
        np.flatnonzero(adata.var_names.isin(MARKERS["gene"]))
    )
    return adata[:, sorted(chosen)].copy()


def finish(adata, path):
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.X.data = np.round(adata.X.data)
    for column in adata.obs.columns:
        if adata.obs[column].dtype == object:
            adata.obs[column] = adata.obs[column].astype("category")
    adata.write_h5ad(path, compression="gzip", compression_opts=9)
    print(path.name, adata.shape, f"{path.stat().st_size / 1e6:.2f} MB")


def stratified(labels: pd.Series, per_group: int, rng) -> np.ndarray:
    chosen = []
    for _, index in labels.groupby(labels, observed=True).indices.items():
        chosen.extend(rng.choice(index, min(per_group, len(index)), replace=False))
    return np.sort(np.array(chosen))


def kang_stim():
    src = ad.read_h5ad(
        SHARED / "kang2018_ifnb_subsets" / "kang_1000ctrl_1000stim_9015genes_harmony_pbmc_stim.h5ad"
    )
    src.obs["total_counts"] = np.asarray(src.X.sum(axis=1)).ravel()
    out = keep_genes(src, 1500)
    out.obs = out.obs[["condition", "donor", "cell_type", "total_counts"]]
    finish(out, HERE / "kang_pbmc_ctrl_stim.h5ad")


def pbmc4k_with_cell_lines():
    rng = np.random.default_rng(SEED)
    pbmc = ad.read_h5ad(SHARED / "soupx_pbmc4k_subset" / "pbmc4k_soupx_2170cells_toc.h5ad")
    pbmc = pbmc[stratified(pbmc.obs["Annotation"].astype(str), 300, rng)].copy()
    pbmc.obs["total_counts"] = np.asarray(pbmc.X.sum(axis=1)).ravel()
    pbmc.obs = pd.DataFrame(
        {
            "source": "pbmc4k",
            "published": pbmc.obs["Annotation"].astype(str),
            # the authors' cluster: their NK label covers cluster 8 (NK) and cluster 6 (CD3+ T cells)
            "published_cluster": pbmc.obs["Cluster"].astype(str),
            "total_counts": pbmc.obs["total_counts"],
        },
        index=pbmc.obs_names,
    )
    # Ensembl id -> symbol of the GRCh38 Cell Ranger 3 gene set (the bundled COVID example's features).
    with h5py.File(SHARED / "covid_pbmc_GSE149689_nbis_subsample" / "Normal_PBMC_5.h5", "r") as handle:
        ids = [x.decode() for x in handle["matrix/features/id"][:]]
        names = [x.decode() for x in handle["matrix/features/name"][:]]
    symbol = dict(zip(ids, names, strict=True))
    root = SHARED / "cellbench_sc_mixology"
    lines = pd.read_csv(root / "sc_celseq2.count.csv.gz", index_col=0)
    meta = pd.read_csv(root / "sc_celseq2.metadata.csv.gz", index_col=0)
    singlets = meta.index[(meta["demuxlet_cls"] == "SNG")]
    singlets = singlets[stratified(meta.loc[singlets, "cell_line"], 40, rng)]
    lines = lines[singlets]
    total = lines.sum(axis=0).to_numpy()
    lines = lines.loc[lines.index.isin(symbol)]
    lines.index = [symbol[i] for i in lines.index]
    lines = lines.groupby(level=0).sum().reindex(pbmc.var_names, fill_value=0)
    cells = ad.AnnData(
        X=sp.csr_matrix(lines.T.to_numpy(dtype=np.float32)),
        obs=pd.DataFrame(
            {
                "source": "cellbench_celseq2",
                "published": meta.loc[singlets, "cell_line"].to_numpy(),
                "published_cluster": "cell line",
                "total_counts": total,
            },
            index=[f"cellbench_{c}" for c in singlets],
        ),
        var=pd.DataFrame(index=pbmc.var_names),
    )
    both = ad.concat([pbmc, cells], join="outer")
    both.var_names = pbmc.var_names
    out = keep_genes(both, 1500)
    finish(out, HERE / "pbmc4k_with_cell_lines.h5ad")


def kang_reference_and_query():
    rng = np.random.default_rng(SEED)
    ref = ad.read_h5ad(SHARED / "kang2018_ifnb_subsets" / "kang_ctrl_8donors_1287genes_muscat_kang_se.h5ad")
    ref = ref[~ref.obs["donor"].astype(str).isin(["101", "107"])]
    ref = ref[stratified(ref.obs["cell_type"].astype(str), 250, rng)].copy()
    ref.obs = ref.obs[["donor", "cell_type"]]
    ref.var = ref.var[[]]
    finish(ref, HERE / "kang_reference_6donors.h5ad")
    query = ad.read_h5ad(
        SHARED / "kang2018_ifnb_subsets" / "kang_4samples_2ctrl2stim_1267genes_muscat_example_sce.h5ad"
    )
    query = query[stratified(query.obs["sample_id"].astype(str), 200, rng)].copy()
    query.obs = query.obs[["sample_id", "donor", "condition", "cell_type"]]
    query.obs["total_counts"] = np.asarray(query.X.sum(axis=1)).ravel()
    finish(query, HERE / "kang_query_2donors.h5ad")


def workflow_subsets():
    """Whole-workflow accuracy tests (tests/annotate/test_workflow_accuracy*.py): raw counts of
    every gene the workflow would see, cut into samples by the test itself."""
    rng = np.random.default_rng(SEED)
    kang = SHARED / "kang2018_ifnb_subsets"
    paired = ad.read_h5ad(kang / "kang_4samples_2ctrl2stim_1267genes_muscat_example_sce.h5ad")
    paired.obs = paired.obs[["sample_id", "donor", "condition", "cell_type"]]
    finish(paired, HERE / "kang_paired_4samples.h5ad")
    eight = ad.read_h5ad(kang / "kang_ctrl_8donors_1287genes_muscat_kang_se.h5ad")
    chosen = stratified(eight.obs["donor"].astype(str), 250, rng)
    eight = eight[chosen].copy()
    eight.obs = eight.obs[["donor", "cell_type"]]
    eight.var = eight.var[[]]
    finish(eight, HERE / "kang_ctrl_8donors_250each.h5ad")
    # pbmc4k: genes detected in >= 10 of the 2,170 cells (>= 97% of every cell's UMIs), stored as
    # uint16 CSR in HDF5 with the shuffle filter (two thirds of the size of the .h5ad)
    pbmc = ad.read_h5ad(SHARED / "soupx_pbmc4k_subset" / "pbmc4k_soupx_2170cells_toc.h5ad")
    counts = sp.csr_matrix(pbmc.X)
    keep = np.asarray((counts > 0).sum(axis=0)).ravel() >= 10
    counts = sp.csr_matrix(counts[:, keep])
    path = HERE / "pbmc4k_soupx_2170cells.h5"
    arrays = {
        "data": counts.data.astype(np.uint16),
        "indices": counts.indices.astype(np.uint16),
        "indptr": counts.indptr.astype(np.int32),
        "shape": np.array(counts.shape),
        "genes": np.asarray(pbmc.var_names[keep], dtype="S"),
        "barcodes": np.asarray(pbmc.obs_names, dtype="S"),
        "annotation": pbmc.obs["Annotation"].astype(str).to_numpy(dtype="S"),
        "cluster": pbmc.obs["Cluster"].astype(str).to_numpy(dtype="S"),
    }
    with h5py.File(path, "w") as handle:
        for name, values in arrays.items():
            handle.create_dataset(name, data=values, compression="gzip", compression_opts=9, shuffle=True)
    print(path.name, counts.shape, f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    kang_stim()
    pbmc4k_with_cell_lines()
    kang_reference_and_query()
    workflow_subsets()
