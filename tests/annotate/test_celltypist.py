"""CellTypist model application (sccohort.annotate.celltypist) with a model in CellTypist's file
format trained on 6 Kang donors and applied to 2 others."""

from __future__ import annotations

import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from annotate.annotation_data import KEY
from sccohort.annotate.celltypist import annotate_celltypist, celltypist_predict, load_celltypist_model
from sccohort.annotate.query import library_sizes
from sccohort.counts import lognormalise
from sccohort.errors import InputError


def test_celltypist_model_labels_other_donors(kang_query, celltypist_model):
    """A model trained on 6 Kang donors labels the 2 other donors: >= 85% of control cells and
    >= 60% of IFN-beta cells per cell; majority voting over clusters lifts control to >= 85%."""
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


def test_celltypist_application_matches_the_celltypist_package(kang_query, celltypist_model):
    """Same labels and probabilities as celltypist.annotate (only when celltypist is installed)."""
    celltypist = pytest.importorskip("celltypist")
    adata = kang_query.copy()
    counts = adata.layers["counts"]
    lognorm = lognormalise(counts, library_sizes(adata, counts))
    ours = celltypist_predict(load_celltypist_model(celltypist_model), lognorm, adata.var_names)
    query = ad.AnnData(
        X=lognorm, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names)
    )
    theirs = celltypist.annotate(query, model=str(celltypist_model))
    assert (
        ours["label"].to_numpy() == theirs.predicted_labels["predicted_labels"].astype(str).to_numpy()
    ).all()
    probability = theirs.probability_matrix.to_numpy()[
        np.arange(adata.n_obs), theirs.decision_matrix.to_numpy().argmax(1)
    ]
    assert np.allclose(ours["probability"].to_numpy(), probability, atol=1e-6)


def test_celltypist_bad_model_files(tmp_path, kang_query):
    not_a_model = tmp_path / "model.pkl"
    with not_a_model.open("wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    with pytest.raises(InputError, match="not a CellTypist model"):
        load_celltypist_model(not_a_model)
    with pytest.raises(InputError, match="does not exist"):
        load_celltypist_model(tmp_path / "absent.pkl")
