"""CellTypist labels from a user-provided local model (.pkl), by the celltypist package itself.

The model file is what ``celltypist.train(...).write(path)`` writes (or a downloaded model the
user keeps locally): nothing is downloaded here. Each cell's log1p counts per 10,000 (library
size over all genes, obs total_counts) go through ``celltypist.annotate`` (best match, no
majority voting); the per-cell labels are then voted over the annotation clusters and enter the
consensus with the other methods.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..counts import lognormalise
from ..errors import InputError
from .query import library_sizes, query_counts
from .voting import store_cluster_votes

LOG = logging.getLogger("sccohort")


def _celltypist():
    """The celltypist package. Importing it creates its model folder ($CELLTYPIST_FOLDER, else
    ~/.celltypist); with no folder set, a temporary one is used so that a read-only home does
    not stop the run (models are read from the configured path, never from that folder)."""
    os.environ.setdefault("CELLTYPIST_FOLDER", str(Path(tempfile.gettempdir()) / "sccohort-celltypist"))
    import celltypist

    return celltypist


def load_celltypist_model(path: str | Path):
    """A CellTypist model (celltypist.models.Model) read from a local .pkl. Only load models you
    trust: pickle runs code. InputError for a missing or invalid file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"CellTypist model {path} does not exist; set annotation.celltypist_model to a local .pkl file."
        )
    models = _celltypist().models
    try:
        model = models.Model.load(str(path.resolve()))
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means a bad model file
        raise InputError(
            f"CellTypist model {path} is not a CellTypist model (expected what celltypist.train(...).write() "
            f"saves: a pickled dict with 'Model', 'Scaler_' and 'description'): {error}"
        ) from None
    for attribute in ("coef_", "intercept_", "classes_", "features"):
        if not hasattr(model.classifier, attribute):
            raise InputError(
                f"CellTypist model {path}: its classifier has no {attribute!r}; is it a CellTypist model?"
            )
    return model


def celltypist_predict(model, lognorm, *, genes, cells) -> pd.DataFrame:
    """CellTypist's best-match labels (celltypist.annotate, no majority voting) of log1p counts
    per 10k (cells x genes). Returns label and probability (of the label) per cell, in order."""
    import anndata as ad

    features = pd.Index(np.asarray(model.classifier.features).astype(str))
    shared = pd.Index(genes).astype(str).isin(features).sum()
    if shared == 0:
        raise InputError(
            f"CellTypist model: none of its {len(features)} features (genes) is in the data; the model must "
            "use gene symbols of the data's species."
        )
    LOG.info("CellTypist: %d of the model's %d features found in the data.", shared, len(features))
    query = ad.AnnData(
        X=lognorm, obs=pd.DataFrame(index=pd.Index(cells).astype(str)), var=pd.DataFrame(index=genes)
    )
    result = _celltypist().annotate(query, model=model, majority_voting=False, mode="best match")
    labels = result.predicted_labels["predicted_labels"].astype(str).to_numpy()
    probability = result.probability_matrix.to_numpy()
    column = result.probability_matrix.columns.get_indexer(labels)
    return pd.DataFrame({"label": labels, "probability": probability[np.arange(len(labels)), column]})


def annotate_celltypist(
    adata, *, model_path: str | Path, cluster_key: str, min_fraction: float = 0.0, layer: str = "counts"
) -> pd.DataFrame:
    """CellTypist per cell (on log1p counts per 10k of layers[layer]) plus majority voting over
    ``obs[cluster_key]``, in place.

    Writes: obs["cell_type_celltypist"] (cluster majority), obs["cell_type_celltypist_cell"]
    (per-cell best match) and obs["cell_type_celltypist_probability"] (float32); see
    store_cluster_votes. Returns the majority-vote table.
    """
    model = load_celltypist_model(model_path)
    counts = query_counts(adata, layer=layer)
    lognorm = lognormalise(counts, library_sizes(adata, counts))
    prediction = celltypist_predict(model, lognorm, genes=adata.var_names, cells=adata.obs_names)
    return store_cluster_votes(
        adata,
        prediction,
        cluster_key=cluster_key,
        min_fraction=min_fraction,
        method="celltypist",
        score="probability",
    )
