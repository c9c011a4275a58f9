"""Build the QC/doublet test data from the project's shared data (see PROVENANCE.md here).

Usage: .venv/bin/python tests/data/qc/make_test_data.py [path/to/shared/data]
Deterministic (no random step): each CellBench matrix keeps all its cells, its N_GENES most
variable genes (scanpy highly_variable_genes, flavor seurat, on log1p counts per 10,000 of all
genes) and one more column, OTHER_GENES, holding each cell's counts of all other genes, so that
library sizes are exact. All five in one file (cells of one matrix share obs["dataset"]).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_GENES = 2000
CELLBENCH = ("sc_celseq2", "sc_dropseq", "sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2", "sc_celseq2_5cl_p3")
HERE = Path(__file__).resolve().parent


def cellbench(source: Path, name: str) -> ad.AnnData:
    counts = pd.read_csv(source / f"{name}.count.csv.gz", index_col=0)
    meta = pd.read_csv(source / f"{name}.metadata.csv.gz", index_col=0)
    cells = [c for c in counts.columns if c in meta.index]
    import scanpy as sc

    X = sp.csr_matrix(counts[cells].to_numpy().T.astype(np.float32))
    normalised = ad.AnnData(X.copy())
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.highly_variable_genes(normalised, n_top_genes=N_GENES, flavor="seurat")
    genes = np.flatnonzero(normalised.var["highly_variable"].to_numpy())
    other = np.asarray(X.sum(axis=1)).ravel() - np.asarray(X[:, genes].sum(axis=1)).ravel()
    obs = pd.DataFrame(
        {
            "demuxlet_cls": meta.loc[cells, "demuxlet_cls"].astype(str).to_numpy(),
            "cell_line": meta.loc[cells]
            .get("cell_line", meta.loc[cells, "cell_line_demuxlet"])
            .astype(str)
            .to_numpy(),
            "total_counts_all_genes": np.asarray(X.sum(axis=1)).ravel(),
        },
        index=pd.Index(cells, dtype=str),
    )
    var = pd.DataFrame(index=pd.Index([*counts.index.astype(str)[genes], "OTHER_GENES"]))
    kept = sp.hstack([X[:, genes], sp.csr_matrix(np.round(other)[:, None])]).tocsr()
    obs.index = pd.Index([f"{name}:{c}" for c in cells], dtype=str)
    obs.insert(0, "dataset", name)
    return ad.AnnData(kept.astype(np.int32), obs=obs, var=var)


def main(shared: Path) -> None:
    parts = []
    for name in CELLBENCH:
        part = cellbench(shared / "cellbench_sc_mixology", name)
        print(name, part.shape, int((part.obs["demuxlet_cls"] == "DBL").sum()), "DBL")
        parts.append(part)
    # Each matrix keeps its own genes; the file holds their union (0 where a matrix lacks a gene).
    adata = ad.concat(parts, join="outer", fill_value=0)
    adata.X = sp.csr_matrix(adata.X).astype(np.int32)
    adata.uns["genes_per_dataset"] = {p.obs["dataset"].iloc[0]: list(p.var_names) for p in parts}
    adata.write_h5ad(HERE / f"cellbench_5_mixtures_{N_GENES}hvg.h5ad", compression="gzip")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data"))
