"""Reference label transfer (sccohort.annotate.reference) from 6 Kang donors to 2 others."""

from __future__ import annotations

import anndata as ad
import pytest
from annotate.annotation_data import KEY, REFERENCE
from sccohort.annotate.reference import annotate_reference, read_reference
from sccohort.counts import lognormalise
from sccohort.errors import InputError


def test_reference_label_transfer_to_other_donors(kang_query, reference):
    """kNN transfer from 6 Kang donors (control) to 2 other donors (control and IFN-beta):
    >= 85% of control cells and >= 70% of IFN-beta cells get their published type."""
    adata = kang_query.copy()
    annotate_reference(adata, reference_path=REFERENCE, label_key="cell_type", cluster_key=KEY, seed=0)
    obs = adata.obs
    right = obs["cell_type_reference_cell"].astype(str) == obs["published"]
    ctrl, stim = obs["condition"] == "ctrl", obs["condition"] == "stim"
    assert right[ctrl].mean() >= 0.85, right[ctrl].mean()
    assert right[stim].mean() >= 0.70, right[stim].mean()
    assert obs["cell_type_reference_confidence"].between(0, 1).all()
    # Seeded: the same call gives the same labels.
    again = kang_query.copy()
    annotate_reference(again, reference_path=REFERENCE, label_key="cell_type", cluster_key=KEY, seed=0)
    assert (again.obs["cell_type_reference_cell"] == obs["cell_type_reference_cell"]).all()


def test_reference_errors_name_the_file_and_column(tmp_path, kang_query):
    path = tmp_path / "ref.h5ad"
    ref = ad.read_h5ad(REFERENCE)
    ref.write_h5ad(path)
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        read_reference(path, "celltype")
    lognorm = ref.copy()
    lognorm.X = lognormalise(ref.X)
    lognorm.write_h5ad(path)
    with pytest.raises(InputError, match="no raw integer counts"):
        read_reference(path, "cell_type")
    few = ref[:, :50].copy()
    few.write_h5ad(path)
    with pytest.raises(InputError, match=r"shares \d+ genes with the data \(< 200\)"):
        annotate_reference(kang_query.copy(), reference_path=path, label_key="cell_type", cluster_key=KEY)
