"""Marker scores: per-cell scores of each cell type against the whole cohort, and the scores of a
node's children among the cells of that node (the statistics inside a lineage).

Whole cohort (the lineages, and ``obs["score_<type>"]`` for every type of the table)::

    z_g     = (x_g - mean_g) / sd_g, clipped to [-10, 10]   (x = log-normalised expression in X,
                                                             mean/sd over all cells of the cohort)
    score_t = (sum_{g: w>0} w_tg z_g  -  sum_{g: w<0} |w_tg| max(z_g, 0)) / D_t
    D_t     = max(W_t(informative), W_t / 2)     (W_t: sum of t's positive weights; informative:
                                                  in the data and not constant)

A negative marker only counts against a cell that expresses it above the average: the absence of
a negative marker is no evidence for a type. Positive markers absent from the data count as
z = 0; while at least half of a type's positive weight is in the data the score is the mean over
its informative markers, below that the absent ones dilute it (a type is not decided by its few
leftover, often least specific, genes). Deterministic: no random control genes.

Among the cells of a node N (e.g. the T cells, for CD4_T vs CD8_T) each gene is centred on the
whole cohort's mean but scaled by its standard deviation among N's cells, so a contrast that only
exists inside the lineage (CD8A, the cytotoxic genes among T cells) is measured on the lineage's
spread, while a type absent from N still scores low (its markers stay below the cohort mean).
Genes every child of N lists with the same sign are dropped there (markers of N itself), and a
child's score is the mean over its informative markers. A child without rows of its own scores
the best of its children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..names import UNKNOWN
from .tree import MarkerTree

LOG = logging.getLogger("sccohort")

Z_CLIP = 10.0
# Below this share of a type's positive weight present in the data, absent markers dilute its score.
MIN_PRESENT_WEIGHT_SHARE = 0.5


def column_block(matrix, columns: np.ndarray) -> np.ndarray:
    """Dense float64 cells x len(columns) block (only marker genes: a thin slice)."""
    block = matrix[:, columns]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def marker_matrix(adata, genes: Sequence[str], *, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cells x genes expression, float64; genes absent from the data are 0) and the mask of the
    genes present in the data."""
    matrix = adata.layers[layer] if layer else adata.X
    columns = adata.var_names.get_indexer(list(genes))
    present = columns >= 0
    block = np.zeros((adata.n_obs, len(genes)), dtype=np.float64)
    if present.any():
        block[:, present] = column_block(matrix, columns[present])
    return block, present


def standardise(
    block: np.ndarray, present: np.ndarray, *, centre: np.ndarray | None = None, clip: float = Z_CLIP
) -> tuple[np.ndarray, np.ndarray]:
    """z-scores of the block's columns (SD over its rows; mean over its rows, or `centre`), clipped
    to [-clip, clip], and the mask of informative genes (present and not constant); the z-scores of
    the others are 0."""
    sd = block.std(axis=0)
    mean = block.mean(axis=0) if centre is None else centre
    informative = present & (sd > 0)
    z = np.zeros_like(block)
    if informative.any():
        z[:, informative] = np.clip(
            (block[:, informative] - mean[informative]) / sd[informative], -clip, clip
        )
    return z, informative


def weighted_score(
    z: np.ndarray,
    informative: np.ndarray,
    gene_index: dict[str, int],
    rows: pd.DataFrame,
    *,
    present_only: bool,
    skip: set[str] = frozenset(),
) -> np.ndarray:
    """One type's score per row of `z` from its marker rows (gene, weight), genes in `skip`
    left out. Denominator: the informative positive weight (present_only), else
    max(informative positive weight, half of the whole positive weight)."""
    rows = rows.loc[~rows["gene"].isin(skip)]
    columns = np.array([gene_index[g] for g in rows["gene"]], dtype=int)
    weights = rows["weight"].to_numpy(dtype=np.float64)
    positive = weights > 0
    informative_weight = float(weights[positive & informative[columns]].sum()) if len(columns) else 0.0
    denominator = (
        informative_weight
        if present_only
        else max(informative_weight, MIN_PRESENT_WEIGHT_SHARE * float(weights[positive].sum()))
    )
    if denominator <= 0:
        return np.zeros(z.shape[0])
    block = z[:, columns]
    if (~positive).any():  # a negative marker only counts against a cell that expresses it
        block = block.copy()
        block[:, ~positive] = np.maximum(block[:, ~positive], 0)
    return block @ weights / denominator


def score_cells(adata, markers: pd.DataFrame, *, layer: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Whole-cohort scores of every type of the table (cells x types, table order, float32) and
    the marker genes that are constant in the data. Expects log-normalised expression in X (or
    `layer`); see the module docstring for the formula."""
    if not markers["gene"].isin(adata.var_names).any():
        raise InputError("None of the marker genes is in the data.")
    genes = list(dict.fromkeys(markers["gene"]))
    block, present = marker_matrix(adata, genes, layer=layer)
    z, informative = standardise(block, present)
    gene_index = {g: i for i, g in enumerate(genes)}
    types = list(dict.fromkeys(markers["cell_type"]))
    scores = np.column_stack(
        [
            weighted_score(
                z, informative, gene_index, markers.loc[markers["cell_type"] == t], present_only=False
            )
            for t in types
        ]
    )
    constant = [g for g, p, i in zip(genes, present, informative, strict=True) if p and not i]
    return pd.DataFrame(scores.astype(np.float32), index=adata.obs_names, columns=types), constant


def child_scores(
    z: np.ndarray,
    informative: np.ndarray,
    gene_index: dict[str, int],
    tree: MarkerTree,
    node: str,
    *,
    present_only: bool,
) -> np.ndarray:
    """Scores (rows of `z` x children of `node`) of `node`'s children, from z-scores computed
    over the cells that compete (standardise); see the module docstring."""
    shared = tree.shared_genes(node)

    def score(child: str) -> np.ndarray:
        rows = tree.rows[child]
        if rows.empty:
            return np.max(np.column_stack([score(c) for c in tree.children[child]]), axis=1)
        return weighted_score(z, informative, gene_index, rows, present_only=present_only, skip=shared)

    return np.column_stack([score(child) for child in tree.children[node]])


def marker_zscores(adata, genes: Sequence[str], *, layer: str | None = None, clip: float = Z_CLIP):
    """Whole-cohort z-scores of the given genes (cells x genes, float32; clipped to [-clip, clip])
    and the constant genes (their z-scores are 0)."""
    block, present = marker_matrix(adata, genes, layer=layer)
    z, informative = standardise(block, present, clip=clip)
    constant = [g for g, p, i in zip(genes, present, informative, strict=True) if p and not i]
    return z.astype(np.float32), constant


def cluster_order(clusters: pd.Series) -> list[str]:
    """The clusters present, as text: numeric names in numeric order, then the others sorted."""
    if isinstance(clusters.dtype, pd.CategoricalDtype):
        values = [str(c) for c in clusters.cat.categories if (clusters == c).any()]
    else:
        values = list(pd.unique(clusters.astype(str)))
    return sorted(values, key=_natural_key)


def _natural_key(name: str):
    """Sort key of cluster and unit names: "2" < "10", "3.2" < "3.10", then other names."""
    if re.fullmatch(r"\d+(\.\d+)*", name):
        return (0, tuple(int(part) for part in name.split(".")), "")
    return (1, (), name)


def check_cluster_key(adata, cluster_key: str) -> None:
    """InputError unless `cluster_key` is an obs column (naming the Leiden columns there are)."""
    if cluster_key not in adata.obs:
        available = [c for c in adata.obs.columns if str(c).startswith("leiden")]
        raise InputError(
            f"The clustered object has no obs column {cluster_key!r} (Leiden columns: "
            f"{', '.join(available) or 'none'}); set annotation.resolution to one of "
            "cohort.leiden_resolutions."
        )


def supporting_markers(
    adata, markers: pd.DataFrame, *, groups: pd.Series, type_of: Mapping[str, str], min_z: float = 0.5
) -> dict[str, str]:
    """Per group of cells (`groups`: each cell's group) whose type is `type_of[group]`: that type's
    positive markers whose mean whole-cohort z-score over the group's cells is >= min_z, highest
    first, as "GENE:z" (the evidence behind a label; "" = no gene clearly up, or Unknown)."""
    positives = markers.loc[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
    genes = list(dict.fromkeys(positives["gene"]))
    groups = pd.Series(np.asarray(groups, dtype=str))
    out = {str(group): "" for group in type_of}
    if not genes:
        return out
    z, _ = marker_zscores(adata, genes)
    means = pd.DataFrame(z, columns=genes).groupby(groups.to_numpy()).mean()
    for group, cell_type in type_of.items():
        own = list(dict.fromkeys(positives.loc[positives["cell_type"] == cell_type, "gene"]))
        if cell_type == UNKNOWN or not own or str(group) not in means.index:
            continue
        values = means.loc[str(group), own].sort_values(ascending=False)
        out[str(group)] = ",".join(f"{g}:{v:.2f}" for g, v in values.items() if v >= min_z)
    return out
