"""Fixtures of the annotation tests: the shipped marker table, the vendored data sets clustered
(and marker-annotated), the Kang reference and a CellTypist model trained on it by celltypist.

Session-scoped: clustering is the slow part and every test copies what it changes.
"""

from __future__ import annotations

import pandas as pd
import pytest
from annotate.annotation_data import KEY, MARKERS, REFERENCE, cluster, read, train_celltypist_model
from sccohort.annotate.marker_method import annotate_markers
from sccohort.annotate.marker_table import read_marker_table
from sccohort.annotate.reference import read_reference


@pytest.fixture(scope="session")
def markers() -> pd.DataFrame:
    return read_marker_table(MARKERS)


@pytest.fixture(scope="session")
def pbmc4k(markers):
    """pbmc4k cells (SoupX labels) plus 120 lung adenocarcinoma cells, clustered and annotated:
    (adata, the tables of annotate_markers)."""
    adata = cluster(read("pbmc4k_with_cell_lines.h5ad", "published"))
    return adata, annotate_markers(adata, markers, cluster_key=KEY, marker_path=MARKERS)


@pytest.fixture(scope="session")
def kang(markers):
    """Kang 2018: 1,000 control + 1,000 IFN-beta cells (labels for control), clustered and annotated."""
    adata = cluster(read("kang_pbmc_ctrl_stim.h5ad", "cell_type"))
    return adata, annotate_markers(adata, markers, cluster_key=KEY, marker_path=MARKERS)


@pytest.fixture(scope="session")
def kang_query():
    """Kang donors 101 and 107 (control and IFN-beta, published labels), clustered."""
    return cluster(read("kang_query_2donors.h5ad", "cell_type"))


@pytest.fixture(scope="session")
def reference():
    return read_reference(REFERENCE, "cell_type")


@pytest.fixture(scope="session")
def celltypist_model(tmp_path_factory):
    return train_celltypist_model(REFERENCE, tmp_path_factory.mktemp("model") / "kang.pkl")
