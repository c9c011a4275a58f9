"""Annotation stage: cell-type labels with a stated confidence, from marker genes (default), a local
CellTypist model and/or an annotated reference, plus composition tables and figures.

Marker-based labels (the default)
---------------------------------
A marker table (TSV: ``cell_type``, ``gene``, optional ``weight`` (negative = negative marker) and
``parent``; further columns, e.g. ``source``, are kept for documentation only) is matched against the genes
of the data. Every cell gets one score per cell type::

    z_g     = (x_g - mean_g) / sd_g, clipped at +10     (x = log-normalised expression in X,
                                                          mean/sd over all cells of the cohort)
    score_t = (sum_{g: w>0} w_tg * z_g  -  sum_{g: w<0} |w_tg| * max(z_g, 0)) / sum_{g: w>0} w_tg
              (sums over ALL markers of type t)

A negative marker only counts against a cell that expresses it above the average: the absence of
a negative marker is no evidence for a type (otherwise e.g. every non-NK cell would gain from
"NK genes low").
Positive markers absent from the data count as z = 0 (no evidence) but stay in the denominator, so
a type whose markers are mostly missing gets a score pulled towards zero instead of being decided by its
few remaining (often least specific) genes. The score is deterministic (no random control genes).
The per-cell scores are kept in ``obs["score_<cell_type>"]``.

Each cluster (Leiden at ``annotation.resolution``) gets the cell type with the highest mean score
over its cells, but only when that mean is >= ``min_score`` and exceeds the second-best type's mean
by >= ``min_margin``. When the margin is too small but both types share a ``parent`` (optional
column of the table, e.g. T for CD4_T and CD8_T) the cluster gets the parent label, provided the
best score beats every type outside that parent by the margin; otherwise the cluster is
``Unknown``. ``obs["cell_type_confidence"]`` is the cluster's margin (best minus second-best mean
score, in z units; the same for all cells of a cluster); ``cluster_annotation.tsv`` says why each
label was given (score, margin, runner-up, reason, the share of the cluster's cells whose own best
type agrees, the best type's markers that are up in the cluster, the cluster's top genes).

Because the z-scores are relative to the whole cohort, scores depend on composition: a type that
makes up most cells gets smaller z-scores for its markers. The margin rule compares types within
a cluster, which is what matters for the label.

Optional methods
----------------
- CellTypist: a user-provided local model (.pkl: a pickled dict with a scikit-learn
  ``LogisticRegression`` under ``"Model"`` that carries ``features``, a ``StandardScaler`` under
  ``"Scaler_"`` and a ``"description"``). It is applied exactly as ``celltypist.annotate`` 1.7
  does (log1p of counts per 10,000, features matched by name, scaled with the model's scaler, values
  above 10 set to 10, decision function of the matched coefficients, probability = expit), without
  importing celltypist, then majority-voted over the annotation clusters.
- Reference label transfer: an annotated .h5ad with raw counts. Both data sets are normalised on
  their shared genes, the reference's highly variable shared genes are scaled with the reference's
  statistics, a PCA fitted on the reference projects the query, and each query cell takes the
  majority label of its k nearest reference cells; then majority-voted over the clusters.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError

LOG = logging.getLogger("sccohort")

UNKNOWN = "Unknown"
SCORE_PREFIX = "score_"
Z_CLIP = 10.0
MARKER_COLUMNS = ("cell_type", "gene", "weight")
REFERENCE_MAX_CELLS = 50_000


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------
def cluster_key_for(resolution: float) -> str:
    """The obs column of the Leiden clusters at `resolution` (the cohort stage's naming)."""
    try:
        from .cohort import leiden_key
    except ImportError:  # pragma: no cover - the cohort module always ships with the workflow
        return f"leiden_{float(resolution)!r}"
    return leiden_key(resolution)


def score_column(cell_type: str) -> str:
    return f"{SCORE_PREFIX}{cell_type}"


# --------------------------------------------------------------------------------------------
# Configuration (checked when the DAG is built)
# --------------------------------------------------------------------------------------------
def resolve_input_path(value: str | None, basedir: str | Path, option: str) -> str | None:
    """A configured input path: as given (relative to the working directory) when it exists there,
    else relative to the workflow's root (`basedir`) when it exists there, else InputError."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise InputError(f"config: {option} {value} does not exist.")
        return str(path)
    shipped = Path(basedir) / path
    if shipped.exists():
        return str(shipped)
    raise InputError(
        f"config: {option} {value} exists neither in the working directory ({Path.cwd()}) nor in the "
        f"workflow directory ({basedir}); fix the path."
    )


def annotation_resolution(config: Mapping) -> float:
    """annotation.resolution, or cohort.default_resolution when it is null."""
    value = config.get("annotation", {}).get("resolution")
    if value is None:
        value = config.get("cohort", {}).get("default_resolution")
    if value is None:
        raise InputError("config: neither annotation.resolution nor cohort.default_resolution is set.")
    return float(value)


def check_annotation_config(
    config: Mapping, basedir: str | Path, gene_symbols: Sequence[str] | None = None
) -> dict:
    """Resolve and check the annotation block; return the resolved settings for the rules.

    Fails early (InputError) on a resolution that is not clustered, a missing or malformed marker
    table, a marker table matching none of `gene_symbols` (the inputs' genes, when given), or a
    missing CellTypist model / reference file.
    """
    options = config.get("annotation", {})
    resolution = annotation_resolution(config)
    clustered = [float(r) for r in config.get("cohort", {}).get("leiden_resolutions", [])]
    if clustered and resolution not in clustered:
        raise InputError(
            f"config: annotation.resolution {resolution} is not one of cohort.leiden_resolutions {clustered}; "
            "add it there or pick one of them."
        )
    markers = resolve_input_path(options.get("markers"), basedir, "annotation.markers")
    if markers is None:
        raise InputError("config: annotation.markers must name a marker table.")
    table = read_marker_table(markers)
    if gene_symbols is not None:
        match_markers(table, gene_symbols, markers)
    model = resolve_input_path(options.get("celltypist_model"), basedir, "annotation.celltypist_model")
    reference = resolve_input_path(options.get("reference"), basedir, "annotation.reference")
    methods = ["markers"] + (["celltypist"] if model else []) + (["reference"] if reference else [])
    return {
        "resolution": resolution,
        "cluster_key": cluster_key_for(resolution),
        "markers": markers,
        "celltypist_model": model,
        "reference": reference,
        "methods": methods,
    }


# --------------------------------------------------------------------------------------------
# Marker table
# --------------------------------------------------------------------------------------------
def read_marker_table(path: str | Path) -> pd.DataFrame:
    """Read and check a marker table; return columns cell_type, gene, weight (+ any extra columns).

    Raises InputError (naming the file) for a missing file, missing columns, empty table,
    non-numeric or zero weights, duplicated (cell_type, gene) rows, or a cell type without any
    positive marker.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Marker table {path} does not exist; set annotation.markers to a TSV file.")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, comment="#", skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"Marker table {path} is not a readable TSV file: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("cell_type", "gene") if c not in table.columns]
    if missing:
        raise InputError(
            f"Marker table {path} lacks column(s) {', '.join(missing)} (it has {', '.join(table.columns)}); "
            "it needs tab-separated columns cell_type, gene and optionally weight."
        )
    if "weight" not in table.columns:
        table["weight"] = "1"
    for column in ("cell_type", "gene"):
        table[column] = table[column].fillna("").str.strip()
    table = table[(table["cell_type"] != "") & (table["gene"] != "")].copy()
    if table.empty:
        raise InputError(f"Marker table {path} has no rows with both a cell_type and a gene.")
    weights = pd.to_numeric(table["weight"].fillna("1").str.strip().replace("", "1"), errors="coerce")
    bad = table.loc[weights.isna() | ~np.isfinite(weights.fillna(0)) | (weights == 0)]
    if not bad.empty:
        row = bad.iloc[0]
        raise InputError(
            f"Marker table {path}: weight {row['weight']!r} of {row['cell_type']}/{row['gene']} is not a "
            "non-zero number (use a positive weight for markers, a negative one for negative markers)."
        )
    table["weight"] = weights.astype(float)
    duplicated = table.duplicated(["cell_type", "gene"])
    if duplicated.any():
        row = table.loc[duplicated].iloc[0]
        raise InputError(
            f"Marker table {path} lists gene {row['gene']} twice for cell type {row['cell_type']}; "
            "keep one row per (cell_type, gene)."
        )
    positives = table.loc[table["weight"] > 0, "cell_type"].unique()
    no_positive = [t for t in table["cell_type"].unique() if t not in positives]
    if no_positive:
        raise InputError(
            f"Marker table {path}: cell type(s) {', '.join(no_positive)} have only negative markers; "
            "give each cell type at least one positive marker."
        )
    slashed = sorted(t for t in table["cell_type"].unique() if "/" in t)
    if slashed:
        # cell types name obs columns (score_<type>), and HDF5 reads "/" as a group separator
        raise InputError(
            f"Marker table {path}: cell type name(s) {', '.join(slashed)} contain '/'; rename them "
            "(e.g. 'CD4/CD8 T' -> 'CD4-CD8 T')."
        )
    if UNKNOWN in set(table["cell_type"]):
        raise InputError(
            f"Marker table {path} uses the reserved label {UNKNOWN!r} as a cell type; rename it."
        )
    if "parent" in table.columns:
        table["parent"] = table["parent"].fillna("").str.strip()
        for cell_type, values in table.groupby("cell_type", sort=False)["parent"]:
            names = set(values) - {""}
            if len(names) > 1:
                raise InputError(
                    f"Marker table {path}: cell type {cell_type} has more than one parent ({', '.join(sorted(names))}); "
                    "give each cell type one parent (or none)."
                )
            table.loc[table["cell_type"] == cell_type, "parent"] = names.pop() if names else ""
        clash = (set(table["parent"]) - {""}) & (set(table["cell_type"]) | {UNKNOWN})
        if clash:
            raise InputError(
                f"Marker table {path}: parent label(s) {', '.join(sorted(clash))} are also cell types (or the reserved "
                "Unknown); use distinct names for parents."
            )
    extra = [c for c in table.columns if c not in MARKER_COLUMNS]
    return table[list(MARKER_COLUMNS) + extra].reset_index(drop=True)


def parents_of(markers: pd.DataFrame) -> dict[str, str]:
    """cell type -> parent label (only types with a parent), from the optional parent column."""
    if "parent" not in markers.columns:
        return {}
    pairs = markers[["cell_type", "parent"]].drop_duplicates("cell_type")
    return {
        t: p for t, p in zip(pairs["cell_type"], pairs["parent"], strict=True) if isinstance(p, str) and p
    }


def match_markers(markers: pd.DataFrame, genes: Sequence[str], path: str | Path = "marker table"):
    """Split the marker table into genes found in the data and genes absent from it.

    Returns (present, missing): two marker tables (missing gains a ``status`` column). Raises
    InputError naming `path` when not a single marker gene is in `genes`.
    """
    genes = pd.Index(genes).astype(str)
    found = markers["gene"].isin(genes)
    if not found.any():
        example = ", ".join(genes[:5])
        raise InputError(
            f"Marker table {path}: none of its {markers['gene'].nunique()} genes is in the data "
            f"({len(genes)} genes, e.g. {example}). Marker genes must use the same identifiers as the "
            "data's gene names (gene symbols of the same species); fix or replace the table."
        )
    present = markers.loc[found].reset_index(drop=True)
    missing = markers.loc[~found, ["cell_type", "gene", "weight"]].copy()
    missing["status"] = "absent from data"
    return present, missing.reset_index(drop=True)


def missing_marker_report(markers: pd.DataFrame, adata, zero_variance: Sequence[str] = ()) -> pd.DataFrame:
    """One row per marker gene that carries no information: absent from the data, or present with
    the same value in every cell; plus one row per cell type with no informative positive marker."""
    genes = pd.Index(adata.var_names).astype(str)
    rows = []
    zero_variance = set(zero_variance)
    for row in markers.itertuples(index=False):
        if row.gene not in genes:
            rows.append((row.cell_type, row.gene, row.weight, "absent from data"))
        elif row.gene in zero_variance:
            rows.append((row.cell_type, row.gene, row.weight, "constant in data (not expressed)"))
    report = pd.DataFrame(rows, columns=["cell_type", "gene", "weight", "status"])
    uninformative = set(report["gene"])
    for cell_type, table in markers.groupby("cell_type", sort=False):
        positives = table.loc[table["weight"] > 0, "gene"]
        if positives.isin(uninformative).all():
            report.loc[len(report)] = (
                cell_type,
                "*",
                np.nan,
                "no positive marker informative: type scores 0",
            )
    return report


# --------------------------------------------------------------------------------------------
# Marker scores
# --------------------------------------------------------------------------------------------
def _column_block(matrix, columns: np.ndarray) -> np.ndarray:
    """Dense float64 cells x len(columns) block (only marker genes: a thin slice)."""
    block = matrix[:, columns]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def marker_zscores(adata, genes: Sequence[str], layer: str | None = None, clip: float = Z_CLIP):
    """z-scores of the given genes over all cells (cells x genes, float32) and the constant genes."""
    matrix = adata.layers[layer] if layer else adata.X
    columns = adata.var_names.get_indexer(list(genes))
    block = _column_block(matrix, columns)
    mean = block.mean(axis=0)
    sd = block.std(axis=0)
    constant = [g for g, s in zip(genes, sd, strict=True) if not s > 0]
    sd[~(sd > 0)] = 1.0
    z = (block - mean) / sd
    np.minimum(z, clip, out=z)
    z[:, [i for i, g in enumerate(genes) if g in set(constant)]] = 0.0
    return z.astype(np.float32), constant


def score_cells(adata, markers: pd.DataFrame, layer: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-cell marker scores (cells x cell types, in the marker table's type order).

    Expects log-normalised expression in X (or `layer`). See the module docstring for the formula.
    Returns (scores, constant_genes).
    """
    present = markers.loc[markers["gene"].isin(adata.var_names)]
    if present.empty:
        raise InputError("None of the marker genes is in the data.")
    genes = list(dict.fromkeys(present["gene"]))
    z, constant = marker_zscores(adata, genes, layer=layer)
    gene_index = {g: i for i, g in enumerate(genes)}
    types = list(dict.fromkeys(markers["cell_type"]))
    scores = np.zeros((adata.n_obs, len(types)), dtype=np.float32)
    for j, cell_type in enumerate(types):
        table = markers.loc[markers["cell_type"] == cell_type]
        denominator = float(table.loc[table["weight"] > 0, "weight"].sum())
        table = table.loc[table["gene"].isin(gene_index)]
        if table.empty:
            continue
        weights = table["weight"].to_numpy(dtype=np.float32)
        block = z[:, [gene_index[g] for g in table["gene"]]]
        negative = weights < 0
        if negative.any():  # a negative marker only counts against a cell that expresses it
            block = block.copy()
            block[:, negative] = np.maximum(block[:, negative], 0)
        scores[:, j] = block @ weights / denominator
    return pd.DataFrame(scores, index=adata.obs_names, columns=types), constant


def assign_clusters(
    scores: pd.DataFrame,
    clusters: pd.Series,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    parents: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Label each cluster from its cells' mean scores.

    best type if its mean score >= min_score and exceeds the runner-up by >= min_margin. When the
    margin is too small but best and runner-up share a parent (e.g. CD4_T and CD8_T -> T), the
    cluster gets the parent label if the best score exceeds every type outside that parent by
    >= min_margin. Otherwise Unknown. Returns one row per cluster: cluster, label, best_type,
    score, second_type, second_score, margin, cell_agreement (fraction of the cluster's cells
    whose own best type is best_type), n_cells, reason.
    """
    parents = dict(parents or {})
    clusters = pd.Series(clusters, index=scores.index).astype(str)
    order = _cluster_order(clusters)
    per_cell_best = scores.idxmax(axis=1)
    means = scores.groupby(clusters.to_numpy(), sort=False).mean().reindex(order)
    rows = []
    for cluster, row in means.iterrows():
        ranked = row.sort_values(ascending=False, kind="stable")
        best, score = ranked.index[0], float(ranked.iloc[0])
        second = ranked.index[1] if len(ranked) > 1 else ""
        second_score = float(ranked.iloc[1]) if len(ranked) > 1 else float("nan")
        margin = score - second_score if len(ranked) > 1 else score
        members = clusters.to_numpy() == cluster
        agreement = float((per_cell_best.to_numpy()[members] == best).mean())
        parent = parents.get(best)
        if score < min_score:
            label, reason = UNKNOWN, f"best score {score:.3g} < min_score {min_score:g}"
        elif margin >= min_margin:
            label, reason = best, "assigned"
        elif parent and parents.get(second) == parent:
            outside = ranked[[parents.get(t) != parent for t in ranked.index]]
            parent_margin = score - float(outside.iloc[0]) if len(outside) else score
            if parent_margin >= min_margin:
                label = parent
                reason = (
                    f"{best} vs {second} margin {margin:.3g} < min_margin {min_margin:g}: parent {parent}"
                )
            else:
                label = UNKNOWN
                reason = f"margin {margin:.3g} over {second} < min_margin {min_margin:g}; {parent} margin {parent_margin:.3g} too"
        else:
            label, reason = UNKNOWN, f"margin {margin:.3g} over {second} < min_margin {min_margin:g}"
        rows.append(
            (cluster, label, best, score, second, second_score, margin, agreement, int(members.sum()), reason)
        )
    return pd.DataFrame(
        rows,
        columns=[
            "cluster",
            "label",
            "best_type",
            "score",
            "second_type",
            "second_score",
            "margin",
            "cell_agreement",
            "n_cells",
            "reason",
        ],
    )


def _cluster_order(clusters: pd.Series) -> list[str]:
    if isinstance(clusters.dtype, pd.CategoricalDtype):
        values = [str(c) for c in clusters.cat.categories if (clusters == c).any()]
    else:
        values = list(pd.unique(clusters.astype(str)))
    return sorted(values, key=lambda c: (0, int(c)) if re.fullmatch(r"\d+", c) else (1, c))


def label_order(markers: pd.DataFrame | None, labels: Sequence[str]) -> list[str]:
    """Marker-table order (each parent just before its first child), then any other label
    alphabetically, Unknown last."""
    present = set(map(str, labels))
    order: list[str] = []
    if markers is not None:
        parents = parents_of(markers)
        for cell_type in dict.fromkeys(markers["cell_type"]):
            for name in (parents.get(cell_type), cell_type):
                if name and name not in order:
                    order.append(name)
    order = [t for t in order if t in present]
    order += sorted(present - set(order) - {UNKNOWN})
    if UNKNOWN in present:
        order.append(UNKNOWN)
    return order


def annotate_markers(
    adata,
    markers: pd.DataFrame,
    cluster_key: str,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    marker_path: str | Path = "marker table",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Marker-based annotation in place: obs score_<type>, cell_type, cell_type_confidence.

    Returns (cluster table, missing-marker report). Raises InputError when no marker gene is in
    the data (naming `marker_path`) or `cluster_key` is not an obs column.
    """
    check_cluster_key(adata, cluster_key)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    scores, constant = score_cells(adata, markers)
    missing = missing_marker_report(markers, adata, constant)
    for cell_type in scores.columns:
        adata.obs[score_column(cell_type)] = scores[cell_type].to_numpy()
    table = assign_clusters(
        scores,
        adata.obs[cluster_key],
        min_margin=min_margin,
        min_score=min_score,
        parents=parents_of(markers),
    )
    clusters = adata.obs[cluster_key].astype(str)
    table["supporting_markers"] = supporting_markers(adata, markers, clusters, table)
    label_of = dict(zip(table["cluster"], table["label"], strict=True))
    margin_of = dict(zip(table["cluster"], table["margin"], strict=True))
    labels = clusters.map(label_of)
    adata.obs["cell_type"] = pd.Categorical(labels, categories=label_order(markers, labels))
    adata.obs["cell_type_confidence"] = clusters.map(margin_of).astype(np.float32).to_numpy()
    n_present = present["gene"].nunique()
    LOG.info(
        "Markers: %d of %d genes found in the data; %d absent, %d constant.",
        n_present,
        markers["gene"].nunique(),
        markers["gene"].nunique() - n_present,
        len(constant),
    )
    return table, missing


def supporting_markers(
    adata, markers: pd.DataFrame, clusters: pd.Series, table: pd.DataFrame, min_z: float = 0.5
) -> list[str]:
    """Per cluster: the best type's positive markers whose mean z-score in the cluster is >= min_z,
    highest first, as "GENE:z" (the evidence behind the label; empty = no gene clearly up)."""
    positives = markers.loc[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
    genes = list(dict.fromkeys(positives["gene"]))
    if not genes:
        return [""] * len(table)
    z, _ = marker_zscores(adata, genes)
    means = pd.DataFrame(z, columns=genes).groupby(clusters.to_numpy()).mean()
    out = []
    for cluster, best in zip(table["cluster"], table["best_type"], strict=True):
        own = positives.loc[positives["cell_type"] == best, "gene"]
        values = means.loc[cluster, list(own)].sort_values(ascending=False)
        out.append(",".join(f"{g}:{v:.2f}" for g, v in values.items() if v >= min_z))
    return out


def check_cluster_key(adata, cluster_key: str) -> None:
    if cluster_key not in adata.obs:
        available = [c for c in adata.obs.columns if str(c).startswith("leiden")]
        raise InputError(
            f"The clustered object has no obs column {cluster_key!r} (Leiden columns: "
            f"{', '.join(available) or 'none'}); set annotation.resolution to one of "
            "cohort.leiden_resolutions."
        )


# --------------------------------------------------------------------------------------------
# Expression helpers
# --------------------------------------------------------------------------------------------
def _is_integer_valued(matrix, n_values: int = 100_000) -> bool:
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    data = np.asarray(data[:n_values], dtype=np.float64)
    return bool(data.size == 0 or (np.all(data >= 0) and np.allclose(data, np.round(data))))


def lognormalise(counts, library_size: np.ndarray | None = None, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p(counts / library size * target_sum) as CSR float32 (library size: row sums by default)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if library_size is None:
        library_size = np.asarray(counts.sum(axis=1)).ravel()
    library_size = np.asarray(library_size, dtype=np.float64)
    factor = np.divide(target_sum, library_size, out=np.zeros_like(library_size), where=library_size > 0)
    out = sp.diags(factor.astype(np.float32)) @ counts
    out = sp.csr_matrix(out)
    np.log1p(out.data, out=out.data)
    return out


def query_counts(adata, layer: str = "counts"):
    """Raw counts of the query (layers[layer]); InputError when absent or not integer-valued."""
    if layer not in adata.layers:
        raise InputError(
            f"The clustered object has no layers[{layer!r}] with raw counts, which CellTypist and reference "
            "transfer need; re-run the cohort stage."
        )
    counts = adata.layers[layer]
    if not _is_integer_valued(counts):
        raise InputError(f"layers[{layer!r}] of the clustered object is not integer counts.")
    return counts


def library_sizes(adata, counts) -> np.ndarray:
    """Per-cell library size over all genes: obs total_counts (from QC, before gene filtering) when
    it is at least the counts' row sum, else the row sum."""
    row_sums = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    if "total_counts" in adata.obs:
        total = pd.to_numeric(adata.obs["total_counts"], errors="coerce").to_numpy(dtype=np.float64)
        if np.all(np.isfinite(total)) and np.all(total >= row_sums - 0.5):
            return total
    return row_sums


# --------------------------------------------------------------------------------------------
# Majority voting and agreement
# --------------------------------------------------------------------------------------------
def majority_vote(labels: pd.Series, clusters: pd.Series, min_fraction: float = 0.0) -> pd.DataFrame:
    """Per cluster: the most frequent label and its fraction; Unknown when fraction < min_fraction."""
    frame = pd.DataFrame(
        {"cluster": pd.Series(clusters).astype(str).to_numpy(), "label": np.asarray(labels, dtype=str)}
    )
    rows = []
    for cluster in _cluster_order(frame["cluster"]):
        counts = frame.loc[frame["cluster"] == cluster, "label"].value_counts()
        top, fraction = counts.index[0], float(counts.iloc[0] / counts.sum())
        label = top if fraction >= min_fraction else UNKNOWN
        rows.append((cluster, label, top, fraction, int(counts.sum())))
    return pd.DataFrame(rows, columns=["cluster", "label", "majority", "fraction", "n_cells"])


def label_correspondence(reference: pd.Series, other: pd.Series) -> dict[str, str]:
    """For each label of `other`, the `reference` label (not Unknown) sharing the most cells with it."""
    table = pd.crosstab(np.asarray(other, dtype=str), np.asarray(reference, dtype=str))
    table = table.drop(columns=[UNKNOWN], errors="ignore")
    if table.shape[1] == 0:
        return {}
    return {str(label): str(row.idxmax()) for label, row in table.iterrows() if row.max() > 0}


def method_agreement(
    adata,
    cluster_key: str,
    methods: Mapping[str, str],
    per_cell: Mapping[str, pd.Series] | None = None,
    parents: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per cluster: each method's cluster label, its support and whether the methods agree.

    `methods` maps a method name to its obs column of cluster labels (the first is the marker
    method); `per_cell` maps a method to its per-cell labels (marker method: each cell's best
    type). ``<method>_support`` is the share of the cluster's cells whose per-cell label is the
    cluster label (or a child of it, for a parent label). Labels of the other methods come from
    other vocabularies, so each is translated to the marker label whose clusters hold most of the
    cells with that per-cell label (``<method>_as_markers``); ``agree`` is True when every method with a label other
    than Unknown says the same after translation (a parent label agrees with its children). The
    translation only flags clusters to inspect; it is not a label itself.
    """
    names = list(methods)
    per_cell = dict(per_cell or {})
    parents = dict(parents or {})
    clusters = adata.obs[cluster_key].astype(str)
    base = adata.obs[methods[names[0]]].astype(str)
    frame = pd.DataFrame({"cluster": _cluster_order(clusters)})
    frame["n_cells"] = frame["cluster"].map(clusters.value_counts()).astype(int)
    translated = {}
    for name in names:
        labels = adata.obs[methods[name]].astype(str)
        first = labels.groupby(clusters.to_numpy()).agg(lambda s: s.value_counts().index[0])
        frame[f"{name}_label"] = frame["cluster"].map(first)
        if name in per_cell:
            cells = pd.Series(np.asarray(per_cell[name], dtype=str), index=adata.obs_names)
            cell_parent = cells.map(parents).fillna("")
            support = []
            for cluster, label in zip(frame["cluster"], frame[f"{name}_label"], strict=True):
                members = (clusters == cluster).to_numpy()
                hits = (cells.to_numpy()[members] == label) | (cell_parent.to_numpy()[members] == label)
                support.append(round(float(hits.mean()), 4) if label != UNKNOWN else float("nan"))
            frame[f"{name}_support"] = support
        if name == names[0]:
            translated[name] = list(frame[f"{name}_label"])
        else:
            # per-cell labels where available: cluster majorities hide most of the overlap
            mapping = label_correspondence(base, per_cell.get(name, labels))
            frame[f"{name}_as_markers"] = [
                UNKNOWN if x == UNKNOWN else mapping.get(x, x) for x in frame[f"{name}_label"]
            ]
            translated[name] = list(frame[f"{name}_as_markers"])

    def agree(i: int) -> bool:
        values = {translated[n][i] for n in names} - {UNKNOWN}
        present_parents = values & set(parents.values())
        values = {parents[v] if parents.get(v) in present_parents else v for v in values}
        return len(values) <= 1

    frame["agree"] = [agree(i) for i in range(len(frame))]
    return frame


# --------------------------------------------------------------------------------------------
# CellTypist (local model, no download)
# --------------------------------------------------------------------------------------------
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


def celltypist_predict(model: dict, lognorm, genes: Sequence[str], chunk_size: int = 5000) -> pd.DataFrame:
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
    adata, model_path: str | Path, cluster_key: str, min_fraction: float = 0.0, layer: str = "counts"
) -> pd.DataFrame:
    """CellTypist per cell plus majority voting over `cluster_key`, in place.

    Adds obs cell_type_celltypist (cluster majority), cell_type_celltypist_cell (per-cell best
    match) and cell_type_celltypist_probability. Returns the majority-vote table.
    """
    model = load_celltypist_model(model_path)
    counts = query_counts(adata, layer)
    lognorm = lognormalise(counts, library_sizes(adata, counts))
    prediction = celltypist_predict(model, lognorm, adata.var_names)
    return store_cluster_votes(adata, prediction, cluster_key, min_fraction, "celltypist", "probability")


def store_cluster_votes(
    adata, prediction: pd.DataFrame, cluster_key: str, min_fraction: float, method: str, score: str
) -> pd.DataFrame:
    """Write a per-cell method's labels into obs and label each cluster by majority vote.

    Adds cell_type_<method>_cell (per-cell label), cell_type_<method>_<score> (from the
    prediction's `score` column) and cell_type_<method> (the cluster's majority label, Unknown
    below `min_fraction`). Returns the majority-vote table.
    """
    clusters = adata.obs[cluster_key]
    votes = majority_vote(prediction["label"], clusters, min_fraction)
    label_of = dict(zip(votes["cluster"], votes["label"], strict=True))
    adata.obs[f"cell_type_{method}_cell"] = pd.Categorical(prediction["label"].to_numpy())
    adata.obs[f"cell_type_{method}_{score}"] = prediction[score].to_numpy(dtype=np.float32)
    majority = clusters.astype(str).map(label_of)
    adata.obs[f"cell_type_{method}"] = pd.Categorical(majority, categories=label_order(None, majority))
    return votes


# --------------------------------------------------------------------------------------------
# Reference label transfer
# --------------------------------------------------------------------------------------------
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
    if not _is_integer_valued(counts):
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


def _mean_sd(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    mean_sq = np.asarray(matrix.multiply(matrix).mean(axis=0)).ravel()
    sd = np.sqrt(np.maximum(mean_sq - mean**2, 0))
    return mean, sd


def transfer_labels(
    query_counts_matrix,
    query_genes: Sequence[str],
    reference,
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
    from sklearn.neighbors import NearestNeighbors

    query_genes = pd.Index(query_genes).astype(str)
    shared = reference.var_names[reference.var_names.isin(query_genes)]
    if len(shared) < min_shared_genes:
        raise InputError(
            f"Reference {reference_path} shares {len(shared)} genes with the data (< {min_shared_genes}); "
            "label transfer needs a reference of the same species with the same gene identifiers."
        )
    rng = np.random.default_rng(seed)
    ref = reference
    if ref.n_obs > max_reference_cells:
        chosen = np.sort(rng.choice(ref.n_obs, max_reference_cells, replace=False))
        ref = ref[chosen]
        LOG.info("Reference: %d cells sampled (seeded) from %d.", max_reference_cells, reference.n_obs)
    ref_log = lognormalise(ref[:, shared].X)
    query_log = lognormalise(sp.csr_matrix(query_counts_matrix)[:, query_genes.get_indexer(shared)])
    mean, sd = _mean_sd(ref_log)
    dispersion = np.divide(sd**2, mean, out=np.zeros_like(mean), where=mean > 0)
    n_features = int(min(n_top_genes, int((sd > 0).sum())))
    features = np.sort(np.argsort(-dispersion, kind="stable")[:n_features])
    scale = sp.diags((1.0 / sd[features]).astype(np.float32))
    ref_scaled = sp.csr_matrix(ref_log[:, features] @ scale)
    query_scaled = sp.csr_matrix(query_log[:, features] @ scale)
    n_comps = int(max(2, min(n_pcs, n_features - 1, ref_scaled.shape[0] - 1)))
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed)
    ref_pcs = pca.fit_transform(ref_scaled)
    query_pcs = pca.transform(query_scaled)
    k = int(min(n_neighbors, ref.n_obs))
    knn = NearestNeighbors(n_neighbors=k).fit(ref_pcs)
    _, neighbours = knn.kneighbors(query_pcs)
    ref_labels = pd.Categorical(ref.obs["label"].astype(str))
    codes = np.asarray(ref_labels.codes)[neighbours]
    votes = np.zeros((codes.shape[0], len(ref_labels.categories)), dtype=np.int32)
    for column in range(codes.shape[1]):
        np.add.at(votes, (np.arange(codes.shape[0]), codes[:, column]), 1)
    best = votes.argmax(axis=1)
    LOG.info(
        "Reference: %d shared genes, %d features, %d PCs, k = %d, %d reference cells, %d labels.",
        len(shared),
        n_features,
        n_comps,
        k,
        ref.n_obs,
        len(ref_labels.categories),
    )
    return pd.DataFrame(
        {
            "label": np.asarray(ref_labels.categories)[best].astype(str),
            "confidence": votes[np.arange(len(best)), best] / float(k),
        }
    )


def annotate_reference(
    adata,
    reference_path: str | Path,
    label_key: str,
    cluster_key: str,
    min_fraction: float = 0.0,
    seed: int = 0,
    n_neighbors: int = 15,
    layer: str = "counts",
) -> pd.DataFrame:
    """Reference label transfer plus majority voting over `cluster_key`, in place.

    Adds obs cell_type_reference (cluster majority), cell_type_reference_cell (per-cell kNN label)
    and cell_type_reference_confidence. Returns the majority-vote table.
    """
    reference = read_reference(reference_path, label_key)
    counts = query_counts(adata, layer)
    prediction = transfer_labels(
        counts, adata.var_names, reference, n_neighbors=n_neighbors, seed=seed, reference_path=reference_path
    )
    return store_cluster_votes(adata, prediction, cluster_key, min_fraction, "reference", "confidence")


# --------------------------------------------------------------------------------------------
# Cluster table with top genes from the data
# --------------------------------------------------------------------------------------------
def cluster_top_genes(adata, cluster_key: str, n_genes: int = 5) -> dict[str, list[str]]:
    """Top genes of each cluster vs the rest (Wilcoxon on log-normalised X, positive log fold change)."""
    import anndata as ad

    from .cohort import find_markers

    light = ad.AnnData(
        X=adata.X, obs=adata.obs[[cluster_key]].copy(), var=pd.DataFrame(index=adata.var_names)
    )
    if not isinstance(light.obs[cluster_key].dtype, pd.CategoricalDtype):
        light.obs[cluster_key] = light.obs[cluster_key].astype(str).astype("category")
    return top_genes_from_markers(find_markers(light, cluster_key, n_genes=max(25, n_genes)), n_genes)


def top_genes_from_markers(table: pd.DataFrame, n_genes: int = 5) -> dict[str, list[str]]:
    """The first `n_genes` genes with a positive log fold change per cluster of a marker table
    (cohort.find_markers' columns: cluster, gene, rank, logfoldchange, ...)."""
    out: dict[str, list[str]] = {}
    for cluster, rows in table.groupby("cluster", sort=False):
        rows = rows.loc[rows["logfoldchange"] > 0].sort_values("rank")
        out[str(cluster)] = list(rows["gene"].head(n_genes))
    return out


def cluster_annotation_table(
    table: pd.DataFrame, top_genes: Mapping[str, Sequence[str]], present_markers: pd.DataFrame
) -> pd.DataFrame:
    """The cluster table as written to cluster_annotation.tsv (rounded, with top genes and the
    best type's markers found in the data)."""
    out = table.copy()
    out["top_markers"] = out["cluster"].map(lambda c: ",".join(top_genes.get(str(c), [])))
    positives = present_markers.loc[present_markers["weight"] > 0]
    markers_of = positives.groupby("cell_type")["gene"].agg(lambda s: ",".join(s))
    out["best_type_markers"] = out["best_type"].map(markers_of).fillna("")
    for column in ("score", "second_score", "margin", "cell_agreement"):
        out[column] = out[column].astype(float).round(4)
    return out


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------
def composition(
    obs: pd.DataFrame,
    label_key: str = "cell_type",
    sample_key: str = "sample",
    condition_key: str = "condition",
):
    """Cells per sample x cell type (long table with the sample's condition and fractions) and the
    per-condition summary (pooled fraction and mean / SD of the per-sample fractions)."""
    labels = obs[label_key].astype(str)
    order = (
        [str(c) for c in obs[label_key].cat.categories]
        if isinstance(obs[label_key].dtype, pd.CategoricalDtype)
        else sorted(labels.unique())
    )
    samples = obs[sample_key].astype(str)
    sample_order = (
        [str(s) for s in obs[sample_key].cat.categories if (samples == str(s)).any()]
        if isinstance(obs[sample_key].dtype, pd.CategoricalDtype)
        else list(pd.unique(samples))
    )
    counts = pd.crosstab(samples, labels).reindex(index=sample_order, columns=order, fill_value=0)
    condition_of = (
        obs.assign(_s=samples)[["_s", condition_key]]
        .drop_duplicates("_s")
        .set_index("_s")[condition_key]
        .astype(str)
        if condition_key in obs
        else pd.Series("all", index=sample_order)
    )
    fractions = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    per_sample = counts.stack().rename("n_cells").reset_index()
    per_sample.columns = ["sample", "cell_type", "n_cells"]
    per_sample["fraction"] = fractions.stack().to_numpy().round(6)
    per_sample.insert(1, "condition", per_sample["sample"].map(condition_of).to_numpy())
    per_sample["n_cells_sample"] = per_sample["sample"].map(counts.sum(axis=1)).astype(int).to_numpy()
    rows = []
    for condition in pd.unique(condition_of.reindex(sample_order)):
        members = [s for s in sample_order if condition_of[s] == condition]
        pooled = counts.loc[members].sum(axis=0)
        for cell_type in order:
            sample_fractions = fractions.loc[members, cell_type]
            rows.append(
                (
                    condition,
                    cell_type,
                    len(members),
                    int(pooled[cell_type]),
                    round(float(pooled[cell_type] / max(pooled.sum(), 1)), 6),
                    round(float(sample_fractions.mean()), 6),
                    round(float(sample_fractions.std(ddof=1)), 6) if len(members) > 1 else float("nan"),
                )
            )
    per_condition = pd.DataFrame(
        rows,
        columns=[
            "condition",
            "cell_type",
            "n_samples",
            "n_cells",
            "fraction_pooled",
            "mean_sample_fraction",
            "sd_sample_fraction",
        ],
    )
    return per_sample, per_condition


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """Stable colours per label (tab20 cycle), light grey for Unknown."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours, i = {}, 0
    for label in labels:
        if label == UNKNOWN:
            colours[label] = "#cccccc"
        else:
            colours[label] = matplotlib.colors.to_hex(cmap(i % 20))
            i += 1
    return colours


def plot_umap_labels(
    adata,
    keys: Sequence[str],
    path: str | Path,
    basis: str = "X_umap",
    max_points: int = 200_000,
    seed: int = 0,
):
    """One UMAP panel per label column (rasterised points, legend beside each panel)."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if k in adata.obs]
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5.5), squeeze=False)
    if basis not in adata.obsm:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, f"no {basis} in the object", ha="center", va="center")
            ax.set_axis_off()
    else:
        coords = np.asarray(adata.obsm[basis])[:, :2]
        order = np.random.default_rng(seed).permutation(adata.n_obs)[:max_points]
        for ax, key in zip(axes.ravel(), keys, strict=False):
            values = adata.obs[key]
            labels = (
                [str(c) for c in values.cat.categories]
                if isinstance(values.dtype, pd.CategoricalDtype)
                else sorted(values.astype(str).unique())
            )
            colours = label_colours(labels)
            values = values.astype(str).to_numpy()[order]
            ax.scatter(
                coords[order, 0],
                coords[order, 1],
                c=[colours[v] for v in values],
                s=max(0.5, min(8.0, 30000 / max(len(order), 1))),
                linewidths=0,
                rasterized=True,
            )
            for label in labels:
                members = values == label
                if members.any() and label != UNKNOWN:
                    x, y = np.median(coords[order][members], axis=0)
                    ax.text(x, y, label, fontsize=7, ha="center", va="center", weight="bold")
            handles = [
                plt.Line2D(
                    [], [], marker="o", ls="", color=colours[lab], label=f"{lab} ({(values == lab).sum()})"
                )
                for lab in labels
            ]
            ax.legend(
                handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False
            )
            ax.set_title(key)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("UMAP 1")
            ax.set_ylabel("UMAP 2")
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight", format="png")
    plt.close(fig)


def dotplot_genes(
    adata, markers: pd.DataFrame, label_key: str = "cell_type", per_type: int = 4
) -> dict[str, list[str]]:
    """Up to `per_type` positive markers (found in the data, each gene once) per assigned type:
    highest weight first, then highest mean expression in that type."""
    labels = adata.obs[label_key].astype(str)
    chosen: dict[str, list[str]] = {}
    used: set[str] = set()
    positives = markers.loc[(markers["weight"] > 0) & markers["gene"].isin(adata.var_names)]
    for cell_type in label_order(markers, labels.unique()):
        table = positives.loc[positives["cell_type"] == cell_type]
        members = (labels == cell_type).to_numpy()
        if table.empty or not members.any():
            continue
        columns = adata.var_names.get_indexer(table["gene"])
        mean = np.asarray(_column_block(adata.X[members], columns).mean(axis=0)).ravel()
        table = table.assign(_mean=mean).sort_values(["weight", "_mean"], ascending=False)
        genes = [g for g in table["gene"] if g not in used][:per_type]
        used.update(genes)
        if genes:
            chosen[cell_type] = genes
    return chosen


def plot_marker_dotplot(adata, markers: pd.DataFrame, path: str | Path, label_key: str = "cell_type") -> None:
    """Dot plot of the marker genes of each assigned type, by assigned type (scanpy dotplot)."""
    import matplotlib.pyplot as plt
    import scanpy as sc

    genes = dotplot_genes(adata, markers, label_key)
    if not genes:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no cell type assigned: no marker dot plot", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path, dpi=150, bbox_inches="tight", format="png")
        plt.close(fig)
        return
    light = adata[:, sorted({g for v in genes.values() for g in v})].copy()
    plot = sc.pl.dotplot(
        light,
        var_names=genes,
        groupby=label_key,
        standard_scale="var",
        show=False,
        return_fig=True,
        title="Marker genes by assigned cell type",
    )
    plot.savefig(path, dpi=150, bbox_inches="tight", format="png")
    plt.close("all")


def plot_composition(per_sample: pd.DataFrame, per_condition: pd.DataFrame, path: str | Path) -> None:
    """Stacked bars of cell-type fractions: one bar per sample (grouped by condition) and one per
    condition (mean of its samples' fractions)."""
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys(per_sample["cell_type"]))
    colours = label_colours(order)
    wide = per_sample.pivot(index="sample", columns="cell_type", values="fraction").reindex(columns=order)
    sample_condition = per_sample.drop_duplicates("sample").set_index("sample")["condition"]
    sample_order = list(sample_condition.sort_values(kind="stable").index)
    wide = wide.loc[sample_order]
    cond = per_condition.pivot(index="condition", columns="cell_type", values="mean_sample_fraction").reindex(
        columns=order
    )
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(4 + 0.45 * len(wide) + 0.6 * len(cond), 5),
        gridspec_kw={"width_ratios": [max(len(wide), 1), max(len(cond), 1) + 1]},
    )
    for ax, frame, title in (
        (axes[0], wide, "per sample"),
        (axes[1], cond, "per condition (mean of samples)"),
    ):
        bottom = np.zeros(len(frame))
        for cell_type in order:
            values = frame[cell_type].fillna(0).to_numpy()
            ax.bar(
                range(len(frame)), values, bottom=bottom, color=colours[cell_type], label=cell_type, width=0.8
            )
            bottom += values
        ax.set_xticks(range(len(frame)))
        labels = (
            [f"{s}\n({sample_condition[s]})" for s in frame.index] if frame is wide else list(frame.index)
        )
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fraction of cells")
        ax.set_title(title, fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    axes[1].legend(
        handles[::-1], names[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False
    )
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight", format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Whole stage
# --------------------------------------------------------------------------------------------
def read_var_names(path: str | Path) -> pd.Index:
    """Gene names of an .h5ad without loading its matrices (for the early marker check)."""
    import anndata as ad
    import h5py

    with h5py.File(path, "r") as handle:
        var = ad.io.read_elem(handle["var"])
    return pd.Index(var.index).astype(str)


def run_annotation(
    adata,
    markers: pd.DataFrame,
    cluster_key: str,
    min_margin: float = 0.1,
    min_score: float = 0.1,
    marker_path: str | Path = "marker table",
    celltypist_model: str | Path | None = None,
    reference: str | Path | None = None,
    reference_label_key: str = "cell_type",
    reference_n_neighbors: int = 15,
    min_vote_fraction: float = 0.0,
    n_top_genes: int = 5,
    seed: int = 0,
    cluster_markers: pd.DataFrame | None = None,
) -> dict:
    """All configured methods on `adata` (in place). Returns the tables to write:
    clusters, missing, and (when more than one method ran) agreement.

    cluster_markers: cohort_markers' table for `cluster_key`; the clusters' top genes are taken
    from it instead of running the Wilcoxon test on X again (X may then hold the marker genes only).
    """
    table, missing = annotate_markers(adata, markers, cluster_key, min_margin, min_score, marker_path)
    methods = {"markers": "cell_type"}
    if celltypist_model:
        votes = annotate_celltypist(adata, celltypist_model, cluster_key, min_vote_fraction)
        methods["celltypist"] = "cell_type_celltypist"
        LOG.info("CellTypist majority labels:\n%s", votes.to_string(index=False))
    if reference:
        votes = annotate_reference(
            adata, reference, reference_label_key, cluster_key, min_vote_fraction, seed, reference_n_neighbors
        )
        methods["reference"] = "cell_type_reference"
        LOG.info("Reference majority labels:\n%s", votes.to_string(index=False))
    if not n_top_genes:
        top = {}
    elif cluster_markers is not None:
        top = top_genes_from_markers(cluster_markers, n_top_genes)
    else:
        top = cluster_top_genes(adata, cluster_key, n_top_genes)
    present, _ = match_markers(markers, adata.var_names, marker_path)
    out = {"clusters": cluster_annotation_table(table, top, present), "missing": missing}
    if len(methods) > 1:
        scores = adata.obs[[score_column(t) for t in dict.fromkeys(markers["cell_type"])]]
        per_cell = {"markers": scores.idxmax(axis=1).str.slice(len(SCORE_PREFIX))}
        for name in methods:
            if f"cell_type_{name}_cell" in adata.obs:
                per_cell[name] = adata.obs[f"cell_type_{name}_cell"]
        out["agreement"] = method_agreement(adata, cluster_key, methods, per_cell, parents_of(markers))
    adata.uns["annotation"] = {
        "cluster_key": cluster_key,
        "markers": str(marker_path),
        "min_margin": float(min_margin),
        "min_score": float(min_score),
        "methods": methods,
        "score_columns": [score_column(t) for t in dict.fromkeys(markers["cell_type"])],
        "confidence": "cluster margin: best minus second-best mean marker score (z units)",
    }
    return out
