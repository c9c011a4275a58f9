"""CellTypist labels (sccohort.annotate.celltypist) with the celltypist package itself, from a
model that celltypist.train fits on 6 Kang donors (the .pkl a user would give), on 2 others."""

from __future__ import annotations

import logging
import pickle

import anndata as ad
import pandas as pd
import pytest
from annotate.annotation_data import KEY, MARKERS
from sccohort.annotate import annotate_cells
from sccohort.annotate.celltypist import annotate_celltypist, load_celltypist_model
from sccohort.errors import InputError
from sccohort.names import UNKNOWN


def test_celltypist_model_labels_other_donors(kang_query, celltypist_model):
    """A model trained by celltypist.train on 6 Kang donors labels the 2 other donors: >= 85% of
    control cells and >= 60% of IFN-beta cells per cell; majority voting over clusters lifts
    control to >= 85%."""
    adata = kang_query.copy()
    votes = annotate_celltypist(adata, model_path=celltypist_model, cluster_key=KEY)
    obs = adata.obs
    ctrl, stim = obs["condition"] == "ctrl", obs["condition"] == "stim"
    per_cell = obs["cell_type_celltypist_cell"].astype(str) == obs["published"]
    assert per_cell[ctrl].mean() >= 0.85, per_cell[ctrl].mean()
    assert per_cell[stim].mean() >= 0.6, per_cell[stim].mean()
    majority = obs["cell_type_celltypist"].astype(str) == obs["published"]
    assert majority[ctrl].mean() >= 0.85
    assert set(votes.columns) >= {"cluster", "label", "fraction", "n_cells"}
    assert obs["cell_type_celltypist_probability"].between(0, 1).all()


def test_the_whole_path_with_a_users_model_file(kang_query, celltypist_model, tmp_path):
    """annotate_cells with annotation.celltypist_model set to the .pkl: CellTypist's labels, the
    consensus with the marker labels (Kang's vocabulary translated to the table's) and the method
    agreement are written; where both methods agree the consensus is right for >= 90% of cells."""
    adata = kang_query.copy()
    adata.obs["sample"] = adata.obs["sample_id"]
    clustered = tmp_path / "clustered.h5ad"
    adata.write_h5ad(clustered)
    out = tmp_path / "out"
    annotate_cells(
        clustered_h5ad=clustered,
        markers=MARKERS,
        output_h5ad=out / "integrated.h5ad",
        clusters_table=out / "cluster_annotation.tsv",
        missing_table=out / "missing_markers.tsv",
        composition_table=out / "cluster_composition.tsv",
        cells_table=out / "cell_types.tsv.gz",
        agreement_table=out / "method_agreement.tsv",
        celltypist_model=celltypist_model,
        cluster_key=KEY,
        options={},
        seed=0,
        log=logging.getLogger("sccohort"),
    )
    result = ad.read_h5ad(out / "integrated.h5ad")
    obs = result.obs
    assert {"cell_type_celltypist", "cell_type_celltypist_cell", "cell_type_consensus"} <= set(obs)
    assert obs["cell_type_consensus_agreement"].between(0, 1).all()
    assert result.uns["annotation"]["methods"]["celltypist"] == "cell_type_celltypist"
    truth = obs["published"].map(
        {
            "B cells": "B",
            "CD4 T cells": "CD4_T",
            "CD8 T cells": "CD8_T",
            "CD14+ Monocytes": "CD14_Mono",
            "FCGR3A+ Monocytes": "FCGR3A_Mono",
        }
    )
    consensus = obs["cell_type_consensus"].astype(str)
    agreed = consensus != UNKNOWN
    assert agreed.mean() >= 0.8
    assert (consensus[agreed] == truth[agreed]).mean() >= 0.9
    cells = pd.read_csv(out / "cell_types.tsv.gz", sep="\t")
    assert {"cell_type_celltypist_cell", "cell_type_consensus"} <= set(cells.columns)
    assert (out / "method_agreement.tsv").stat().st_size > 0


def test_celltypist_bad_model_files(tmp_path):
    not_a_model = tmp_path / "model.pkl"
    with not_a_model.open("wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    with pytest.raises(InputError, match="not a CellTypist model"):
        load_celltypist_model(not_a_model)
    with pytest.raises(InputError, match="does not exist"):
        load_celltypist_model(tmp_path / "absent.pkl")
