"""CellTypist labels from a user-provided local model (no download, no celltypist import).

The model is a .pkl: a pickled dict with a scikit-learn ``LogisticRegression`` under ``"Model"``
that carries ``features``, a ``StandardScaler`` under ``"Scaler_"`` and a ``"description"``. It is
applied exactly as ``celltypist.annotate`` 1.7 does (log1p of counts per 10,000, features matched
by name, scaled with the model's scaler, values above 10 set to 10, decision function of the
matched coefficients, probability = expit), then majority-voted over the annotation clusters.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..counts import lognormalise
from ..errors import InputError
from .query import library_sizes, query_counts
from .voting import store_cluster_votes

LOG = logging.getLogger("sccohort")


def load_celltypist_model(path: str | Path) -> dict:
    """Read a CellTypist model file (.pkl). Only load models you trust: pickle runs code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"CellTypist model {path} does not exist; set annotation.celltypist_model to a local .pkl file."
        )
    try:
        with path.open("rb") as handle:
            obj = pickle.load(handle)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad model file
        raise InputError(f"CellTypist model {path} could not be read as a pickle: {error}") from None
    if isinstance(obj, dict) and {"Model", "Scaler_"} <= set(obj):
        classifier, scaler, description = obj["Model"], obj["Scaler_"], obj.get("description", {})
    elif hasattr(obj, "classifier") and hasattr(obj, "scaler"):  # a celltypist.models.Model object
        classifier, scaler, description = obj.classifier, obj.scaler, getattr(obj, "description", {})
    else:
        raise InputError(
            f"CellTypist model {path} is not a CellTypist model (expected a pickled dict with keys "
            "'Model', 'Scaler_' and 'description')."
        )
    for attribute in ("coef_", "intercept_", "classes_", "features"):
        if not hasattr(classifier, attribute):
            raise InputError(
                f"CellTypist model {path}: its classifier has no {attribute!r}; is it a CellTypist model?"
            )
    if not hasattr(scaler, "scale_"):
        raise InputError(f"CellTypist model {path}: its scaler has no 'scale_'; is it a CellTypist model?")
    return {"classifier": classifier, "scaler": scaler, "description": description or {}, "path": str(path)}


def celltypist_predict(model: dict, lognorm, genes: Sequence[str], *, chunk_size: int = 5000) -> pd.DataFrame:
    """CellTypist 'best match' prediction on log1p(counts per 10k) expression.

    Mirrors celltypist.classifier.Classifier.celltype (v1.7.1): the model's features are matched to
    `genes` by name, values are scaled with the model's StandardScaler, values above 10 are set to
    10, the decision function uses the matched coefficients only, probability = expit(decision).
    Returns a DataFrame (cells in order) with columns label, probability (of the label) and
    decision (of the label). Works in chunks of cells, never on the whole dense matrix.
    """
    from scipy.special import expit

    classifier, scaler = model["classifier"], model["scaler"]
    features = pd.Index(np.asarray(classifier.features).astype(str))
    genes = pd.Index(genes).astype(str)
    keep = np.flatnonzero(genes.isin(features))
    if keep.size == 0:
        raise InputError(
            f"CellTypist model {model.get('path', '')}: none of its {len(features)} features (genes) is in the data; "
            "the model must use gene symbols of the data's species."
        )
    model_index = features.get_indexer(genes[keep])
    means = scaler.mean_[model_index] if getattr(scaler, "with_mean", True) else 0.0
    sds = scaler.scale_[model_index]
    coef = np.asarray(classifier.coef_)[:, model_index]
    intercept = np.asarray(classifier.intercept_)
    classes = np.asarray(classifier.classes_).astype(str)
    LOG.info("CellTypist: %d of the model's %d features found in the data.", keep.size, len(features))
    lognorm = sp.csr_matrix(lognorm)
    labels, probabilities, decisions = [], [], []
    for start in range(0, lognorm.shape[0], chunk_size):
        block = lognorm[start : start + chunk_size][:, keep].toarray().astype(np.float64)
        block = (block - means) / sds
        block[block > 10] = 10
        scores = block @ coef.T + intercept
        if scores.ndim == 1 or scores.shape[1] == 1:
            scores = np.column_stack([-scores.ravel(), scores.ravel()])
        best = scores.argmax(axis=1)
        labels.append(classes[best])
        decisions.append(scores[np.arange(len(best)), best])
        probabilities.append(expit(decisions[-1]))
    return pd.DataFrame(
        {
            "label": np.concatenate(labels),
            "probability": np.concatenate(probabilities),
            "decision": np.concatenate(decisions),
        }
    )


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
    prediction = celltypist_predict(model, lognorm, adata.var_names)
    return store_cluster_votes(
        adata,
        prediction,
        cluster_key=cluster_key,
        min_fraction=min_fraction,
        method="celltypist",
        score="probability",
    )
