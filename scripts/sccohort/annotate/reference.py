"""Reference label transfer: each query cell takes the majority label of its nearest cells of an
annotated reference (.h5ad with raw counts) in a PCA fitted on the reference, then the labels are
majority-voted over the annotation clusters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..counts import is_integer_valued, lognormalise, mean_var
from ..errors import InputError
from .query import INTEGER_CHECK_VALUES, query_counts
from .voting import store_cluster_votes

LOG = logging.getLogger("sccohort")

REFERENCE_MAX_CELLS = 50_000


def read_reference(path: str | Path, label_key: str):
    """Load an annotated reference: an AnnData with raw counts in X, labels in obs[label_key].

    Counts are taken from layers['counts'], else .raw.X, else X; they must be integer-valued.
    Cells without a label are dropped.
    """
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"Reference {path} does not exist; set annotation.reference to an annotated .h5ad file."
        )
    try:
        reference = ad.read_h5ad(path)
    except Exception as error:  # noqa: BLE001 - any read failure means a bad reference file
        raise InputError(f"Reference {path} could not be read as .h5ad: {error}") from None
    if label_key not in reference.obs:
        raise InputError(
            f"Reference {path} has no obs column {label_key!r} (it has {', '.join(map(str, reference.obs.columns))}); "
            "set annotation.reference_label_key."
        )
    if "counts" in reference.layers:
        counts, var_names = reference.layers["counts"], reference.var_names
    elif reference.raw is not None:
        counts, var_names = reference.raw.X, reference.raw.var_names
    else:
        counts, var_names = reference.X, reference.var_names
    if not is_integer_valued(counts, n_values=INTEGER_CHECK_VALUES):
        raise InputError(
            f"Reference {path}: no raw integer counts found (looked in layers['counts'], .raw.X and X); "
            "label transfer normalises both data sets the same way and needs raw counts."
        )
    labels = reference.obs[label_key]
    keep = labels.notna().to_numpy() & (labels.astype(str).str.strip() != "").to_numpy()
    out = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32)[keep],
        obs=pd.DataFrame({"label": labels[keep].astype(str).to_numpy()}, index=reference.obs_names[keep]),
        var=pd.DataFrame(index=pd.Index(var_names).astype(str)),
    )
    out.var_names_make_unique()
    if out.n_obs == 0:
        raise InputError(f"Reference {path}: obs[{label_key!r}] is empty for every cell.")
    return out


def transfer_labels(
    query_counts_matrix,
    query_genes: Sequence[str],
    reference,
    *,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
    min_shared_genes: int = 200,
    reference_path: str | Path = "reference",
    max_reference_cells: int = REFERENCE_MAX_CELLS,
) -> pd.DataFrame:
    """kNN label transfer from `reference` (from read_reference) to query cells (raw counts).

    1. Shared genes; both data sets log-normalised (per 10k) on the shared genes only, so a
       reference with few genes and a query with many are on the same scale.
    2. Features: the `n_top_genes` shared genes with the highest dispersion (variance / mean of the
       log-normalised values) in the reference; scaled to unit variance with the reference's SD.
    3. PCA (centred on the reference, arpack, seeded) fitted on the reference; the query is
       projected onto the same axes (ingest-like; the query does not move the reference).
    4. Each query cell takes the most frequent label among its `n_neighbors` nearest reference
       cells (Euclidean in PC space); confidence = that label's share of the neighbours.
    Every query cell gets one of the reference's labels: there is no novelty detection, so cell
    types the reference lacks are forced onto the nearest reference type (the agreement table and
    the confidence show it). Use a reference that covers the query's cell types.
    Returns a DataFrame with columns label, confidence (query order).
    """
    from sklearn.decomposition import PCA

    query_genes = pd.Index(query_genes).astype(str)
    shared = reference.var_names[reference.var_names.isin(query_genes)]
    if len(shared) < min_shared_genes:
        raise InputError(
            f"Reference {reference_path} shares {len(shared)} genes with the data (< {min_shared_genes}); "
            "label transfer needs a reference of the same species with the same gene identifiers."
        )
    ref = _subsample(reference, max_cells=max_reference_cells, seed=seed)
    ref_log = lognormalise(ref[:, shared].X)
    query_log = lognormalise(sp.csr_matrix(query_counts_matrix)[:, query_genes.get_indexer(shared)])
    features, scale = _scaled_features(ref_log, n_top_genes=n_top_genes)
    ref_scaled = sp.csr_matrix(ref_log[:, features] @ scale)
    query_scaled = sp.csr_matrix(query_log[:, features] @ scale)
    n_comps = int(max(2, min(n_pcs, len(features) - 1, ref_scaled.shape[0] - 1)))
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed)
    ref_pcs = pca.fit_transform(ref_scaled)
    query_pcs = pca.transform(query_scaled)
    k = int(min(n_neighbors, ref.n_obs))
    prediction, n_labels = _neighbour_vote(ref_pcs, query_pcs, ref.obs["label"], k=k)
    LOG.info(
        "Reference: %d shared genes, %d features, %d PCs, k = %d, %d reference cells, %d labels.",
        len(shared),
        len(features),
        n_comps,
        k,
        ref.n_obs,
        n_labels,
    )
    return prediction


def _subsample(reference, *, max_cells: int, seed: int):
    """The reference, or `max_cells` of its cells drawn without replacement (seeded) if it has more."""
    if reference.n_obs <= max_cells:
        return reference
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(reference.n_obs, max_cells, replace=False))
    LOG.info("Reference: %d cells sampled (seeded) from %d.", max_cells, reference.n_obs)
    return reference[chosen]


def _scaled_features(ref_log: sp.csr_matrix, *, n_top_genes: int) -> tuple[np.ndarray, sp.dia_matrix]:
    """(columns of the `n_top_genes` most dispersed genes with SD > 0, in column order; the diagonal
    float32 matrix that scales them to unit variance) from the reference's log-normalised values.

    Dispersion = population variance / mean; genes of mean 0 have dispersion 0.
    """
    mean, var = mean_var(ref_log, ddof=0)
    sd = np.sqrt(var)
    dispersion = np.divide(sd**2, mean, out=np.zeros_like(mean), where=mean > 0)
    n_features = int(min(n_top_genes, int((sd > 0).sum())))
    features = np.sort(np.argsort(-dispersion, kind="stable")[:n_features])
    return features, sp.diags((1.0 / sd[features]).astype(np.float32))


def _neighbour_vote(ref_pcs: np.ndarray, query_pcs: np.ndarray, ref_labels: pd.Series, *, k: int):
    """(DataFrame label, confidence per query cell; number of reference labels): the most frequent
    label among each query cell's `k` nearest reference cells (the first label in sorted order on a
    tie) and its share of the k."""
    from sklearn.neighbors import NearestNeighbors

    knn = NearestNeighbors(n_neighbors=k).fit(ref_pcs)
    _, neighbours = knn.kneighbors(query_pcs)
    labels = pd.Categorical(ref_labels.astype(str))
    codes = np.asarray(labels.codes)[neighbours]
    votes = np.zeros((codes.shape[0], len(labels.categories)), dtype=np.int32)
    for column in range(codes.shape[1]):
        np.add.at(votes, (np.arange(codes.shape[0]), codes[:, column]), 1)
    best = votes.argmax(axis=1)
    prediction = pd.DataFrame(
        {
            "label": np.asarray(labels.categories)[best].astype(str),
            "confidence": votes[np.arange(len(best)), best] / float(k),
        }
    )
    return prediction, len(labels.categories)


def annotate_reference(
    adata,
    *,
    reference_path: str | Path,
    label_key: str,
    cluster_key: str,
    min_fraction: float = 0.0,
    seed: int = 0,
    n_neighbors: int = 15,
    layer: str = "counts",
) -> pd.DataFrame:
    """Reference label transfer (from the raw counts in layers[layer]) plus majority voting over
    ``obs[cluster_key]``, in place.

    Writes: obs["cell_type_reference"] (cluster majority), obs["cell_type_reference_cell"]
    (per-cell kNN label) and obs["cell_type_reference_confidence"] (float32); see
    store_cluster_votes. Returns the majority-vote table.
    """
    reference = read_reference(reference_path, label_key)
    counts = query_counts(adata, layer=layer)
    prediction = transfer_labels(
        counts, adata.var_names, reference, n_neighbors=n_neighbors, seed=seed, reference_path=reference_path
    )
    return store_cluster_votes(
        adata,
        prediction,
        cluster_key=cluster_key,
        min_fraction=min_fraction,
        method="reference",
        score="confidence",
    )
