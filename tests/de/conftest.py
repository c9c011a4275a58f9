"""Fixtures of the DE stage's tests: real cells with a known answer.

Data (tests/data/de/PROVENANCE.md): real PBMCs of Kang et al. 2018 --
  * kang_ctrl_8donors_3types.h5ad: 8 control donors, 3 published cell types. Donors are split
    into two pseudo-conditions and fold changes are planted by binomial thinning (seeded), so
    the true DE genes are known.
  * kang_paired_2donors_ctrl_stim.h5ad: 2 donors, each control and IFN-beta stimulated; the
    interferon-stimulated genes must come out up in stimulated cells.
PyDESeq2 fits every gene separately (~10 ms per gene and group here), so the tests use the most
expressed genes only (N_GENES); all runs together take well under a minute on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "de"
N_GENES = 400  # most expressed genes kept for PyDESeq2 runs
CONTROL_DONORS_FILE = DATA / "kang_ctrl_8donors_3types.h5ad"
PAIRED_FILE = DATA / "kang_paired_2donors_ctrl_stim.h5ad"


def top_genes(adata: ad.AnnData, n: int) -> ad.AnnData:
    """The n genes with the most counts overall (ignores conditions), in their original order."""
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    return adata[:, np.sort(np.argsort(-totals, kind="stable")[:n])].copy()


@pytest.fixture(scope="module")
def control_cells() -> ad.AnnData:
    """8 control donors x 3 cell types, N_GENES genes; obs["sample"] is the donor."""
    adata = top_genes(ad.read_h5ad(CONTROL_DONORS_FILE), N_GENES)
    adata.obs["sample"] = adata.obs["donor"].astype(str)
    return adata


@pytest.fixture(scope="module")
def paired_cells() -> ad.AnnData:
    """2 donors x ctrl/stim (Kang IFN-beta), N_GENES genes; obs["sample"] is the sample id."""
    adata = top_genes(ad.read_h5ad(PAIRED_FILE), N_GENES)
    adata.obs["sample"] = adata.obs["sample_id"].astype(str)
    return adata


@pytest.fixture(scope="module")
def donors(control_cells) -> list[str]:
    return sorted(control_cells.obs["donor"].astype(str).unique())


@pytest.fixture(scope="module")
def treated(donors) -> list[str]:
    # Alternate donors in sorted order: 4 vs 4, fixed before any result was looked at.
    return donors[::2]
