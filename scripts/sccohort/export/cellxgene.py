"""The CELLxGENE schema's AnnData (schema 7, as cellxgene-schema 7.1.2 validates it) from
results/cohort/integrated.h5ad: log-normalised X, raw counts in raw.X, Ensembl ids as the var
index (genes the schema's gene reference lacks are dropped and listed), the workflow's labels as
author_cell_type with their Cell Ontology ids, and the per-sample metadata the config resolved.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..names import UNKNOWN, colours_key

# obs columns CELLxGENE adds itself (labels of the *_ontology_term_id columns) or reserves: a
# column of ours with such a name is renamed author_<name>
RESERVED_OBS = {
    "assay",
    "cell_type",
    "development_stage",
    "disease",
    "self_reported_ethnicity",
    "sex",
    "tissue",
    "organism",
    "organism_ontology_term_id",
    "ethnicity",
    "ethnicity_ontology_term_id",
    "observation_joinid",
    "experimental_condition",
    "perturbation_types",
    "donor_id",
    "cell_type_ontology_term_id",
}
# per-cell QC values kept beside the labels and the sheet covariates
QC_COLUMNS = ("n_genes_by_counts", "total_counts", "pct_counts_mt", "doublet_score", "predicted_doublet")
DROP_REASON = "not in the gene reference of the CELLxGENE schema"


def read_gene_reference(path: str | Path) -> set[str]:
    """The Ensembl ids of a shipped gene reference (workflow/resources/cellxgene/*.txt.gz)."""
    with gzip.open(path, "rt") as handle:
        return {line.strip() for line in handle if line.strip() and not line.startswith("#")}


def read_cl_ids(markers: str | Path) -> dict[str, str]:
    """cell type -> Cell Ontology id from the marker table's optional cl_id column (checked by the
    annotation stage's reader when the DAG is built)."""
    table = pd.read_csv(markers, sep="\t", dtype=str, comment="#")
    table.columns = [str(c).strip() for c in table.columns]
    if "cl_id" not in table.columns:
        return {}
    pairs = table[["cell_type", "cl_id"]].dropna()
    pairs = pairs[pairs["cl_id"].str.strip() != ""]
    return {str(t).strip(): str(c).strip() for t, c in zip(pairs["cell_type"], pairs["cl_id"], strict=True)}


def select_genes(var: pd.DataFrame, reference: set[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """(mask of the genes kept, table of the genes dropped: gene_id, gene_symbol, reason).

    A gene is kept when its Ensembl id (var["gene_id"], without a version suffix) is in
    `reference`; of several genes with one id the first is kept."""
    ids = var["gene_id"].astype(str).str.replace(r"\.\d+$", "", regex=True)
    in_reference = ids.isin(reference).to_numpy()
    duplicated = ids.duplicated().to_numpy()
    keep = in_reference & ~duplicated
    reasons = np.where(~in_reference, DROP_REASON, "duplicated Ensembl id")
    symbols = var["gene_symbol"] if "gene_symbol" in var else pd.Series(var.index, index=var.index)
    dropped = pd.DataFrame(
        {
            "gene_id": ids[~keep].to_numpy(),
            "gene_symbol": symbols[~keep].astype(str).to_numpy(),
            "reason": reasons[~keep],
        }
    )
    return keep, dropped


def ontology_ids(labels: pd.Series, cl_ids: Mapping[str, str]) -> tuple[pd.Series, list[str]]:
    """cell_type_ontology_term_id per cell: the label's CL id, "unknown" for Unknown and for labels
    without an id. Returns (the ids, the labels other than Unknown that had no id)."""
    labels = labels.astype(str)
    mapping = {label: cl_ids.get(label, "unknown") for label in labels.unique()}
    mapping[UNKNOWN] = "unknown"
    missing = sorted(label for label, term in mapping.items() if term == "unknown" and label != UNKNOWN)
    return labels.map(mapping), missing


def cellxgene_obs(obs: pd.DataFrame, *, label_columns: list[str], sample_metadata: Mapping, cl_ids: Mapping):
    """The schema's obs: per-sample metadata, cell_type_ontology_term_id of the cell_type labels,
    the labels as author_<column>, the sheet covariates, Leiden clusters and a few QC values.

    Returns (obs, renamed: our column -> its name in the export, labels without a CL id)."""
    out = pd.DataFrame(index=obs.index)
    samples = obs["sample"].astype(str)
    unknown_samples = sorted(set(samples) - set(sample_metadata))
    if unknown_samples:
        raise ValueError(f"no CELLxGENE metadata for sample(s) {', '.join(unknown_samples)}")
    fields = next(iter(sample_metadata.values())).keys()
    for field in fields:
        values = samples.map({s: meta[field] for s, meta in sample_metadata.items()})
        out[field] = values.astype(bool) if field == "is_primary_data" else pd.Categorical(values.astype(str))
    terms, missing = ontology_ids(obs["cell_type"], cl_ids)
    out["cell_type_ontology_term_id"] = pd.Categorical(terms)
    renamed = {}
    for column in obs.columns:
        if column in out.columns or column in ("barcode",):
            continue
        keep = (
            column in label_columns
            or isinstance(obs[column].dtype, pd.CategoricalDtype)
            or column in QC_COLUMNS
            or column.startswith("cell_type")
        )
        if not keep:
            continue
        name = f"author_{column}" if column in RESERVED_OBS or column in label_columns else column
        out[name] = (
            obs[column].to_numpy() if not isinstance(obs[column].dtype, pd.CategoricalDtype) else obs[column]
        )
        renamed[column] = name
    return out, renamed, missing


def build_cellxgene(adata, *, reference: set[str], settings: Mapping, cl_ids: Mapping[str, str]):
    """The CELLxGENE AnnData of `adata` (integrated.h5ad, counts in layers["counts"]).

    `settings`: check_export_config's (title, organism, samples, cell_type_ontology). Returns
    (the AnnData, the table of dropped genes, a summary dict)."""
    import anndata as ad
    import scipy.sparse as sp

    keep, dropped = select_genes(adata.var, reference)
    ids = adata.var["gene_id"].astype(str).str.replace(r"\.\d+$", "", regex=True)[keep]
    var = pd.DataFrame({"feature_is_filtered": False}, index=pd.Index(ids.to_numpy(), name=None))
    if "gene_symbol" in adata.var:
        var["gene_symbol"] = adata.var["gene_symbol"].astype(str).to_numpy()[keep]
    label_columns = list(
        (adata.uns.get("annotation") or {}).get("methods", {"markers": "cell_type"}).values()
    )
    obs, renamed, missing = cellxgene_obs(
        adata.obs,
        label_columns=label_columns,
        sample_metadata=settings["samples"],
        cl_ids={**cl_ids, **settings["cell_type_ontology"]},
    )
    X = sp.csr_matrix(adata.X[:, keep], dtype=np.float32)
    counts = sp.csr_matrix(adata.layers["counts"][:, keep], dtype=np.float32)
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.raw = ad.AnnData(X=counts, obs=obs[[]], var=var[["gene_symbol"]] if "gene_symbol" in var else var[[]])
    for key in ("X_umap", "X_pca", "X_pca_harmony"):
        if key in adata.obsm:
            out.obsm[key] = np.asarray(adata.obsm[key], dtype=np.float32)
    out.uns["title"] = settings["title"]
    out.uns["organism_ontology_term_id"] = settings["organism"]
    out.uns["default_embedding"] = "X_umap"
    batch_keys = [
        k
        for k in ((adata.uns.get("cohort") or {}).get("parameters") or {}).get("batch_keys", ["sample"])
        if k in renamed
    ]
    out.uns["batch_condition"] = [renamed[k] for k in batch_keys] or ["sample"]
    for column, name in renamed.items():
        if colours_key(column) in adata.uns:
            out.uns[colours_key(name)] = np.asarray(adata.uns[colours_key(column)], dtype=object).astype(str)
    summary = {
        "n_cells": int(out.n_obs),
        "n_genes_in": int(adata.n_vars),
        "n_genes_kept": int(out.n_vars),
        "n_genes_dropped": int(len(dropped)),
        "genes_dropped_by_reason": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()},
        "labels_without_cell_ontology_id": missing,
        "organism_ontology_term_id": settings["organism"],
    }
    return out, dropped, summary
