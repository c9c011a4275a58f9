"""Re-create the two hashing samples here from the shared GSE108313 data (see PROVENANCE.txt).

Run from the repository root:  .venv/bin/python tests/data/hashing/make_subset.py
"""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

HERE = Path(__file__).parent
SOURCE = HERE.parents[3] / "shared" / "data" / "pbmc_hashing_8samples_GSE108313"
if not SOURCE.exists():
    SOURCE = Path("/work/shared/data/pbmc_hashing_8samples_GSE108313")
N_CELLS = 500
# Cells with more than this % of counts from the MOUSE_ genes are all kept (htoC has 7 over 10 %).
MOUSE_PCT = 10

for i, sample in enumerate(("htoC", "htoE")):
    folder = SOURCE / sample
    matrix = sp.csc_matrix(scipy.io.mmread(folder / "matrix.mtx.gz"))  # genes x cells
    features = pd.read_csv(folder / "features.tsv.gz", sep="\t", header=None)
    barcodes = pd.read_csv(folder / "barcodes.tsv.gz", sep="\t", header=None)[0]
    mouse = features[1].astype(str).str.startswith("MOUSE_").to_numpy()
    totals = np.asarray(matrix.sum(axis=0)).ravel()
    pct_mouse = 100 * np.asarray(matrix[mouse].sum(axis=0)).ravel() / np.maximum(totals, 1)
    rng = np.random.default_rng(i)
    chosen = set(rng.choice(matrix.shape[1], N_CELLS, replace=False)) | set(
        np.flatnonzero(pct_mouse > MOUSE_PCT)
    )
    chosen = np.sort(list(chosen))
    target = HERE / sample
    target.mkdir(exist_ok=True)
    with gzip.open(target / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, matrix[:, chosen].tocoo().astype(np.int64), field="integer")
    shutil.copyfile(folder / "features.tsv.gz", target / "features.tsv.gz")
    barcodes.iloc[chosen].to_csv(
        target / "barcodes.tsv.gz", sep="\t", header=False, index=False, compression="gzip"
    )
    print(
        sample, len(chosen), "cells,", int((pct_mouse[chosen] > MOUSE_PCT).sum()), f"over {MOUSE_PCT}% mouse"
    )
