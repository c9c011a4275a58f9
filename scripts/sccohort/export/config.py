"""The export block of the config, resolved and checked when the DAG is built: which exports run,
and the CELLxGENE metadata of every sample (the sheet column of the field's name when the sheet
has one and the row is not empty, else export.cellxgene_metadata)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..errors import InputError

# obs columns of the CELLxGENE schema (7.x) filled per sample; the config default of each is in
# export.cellxgene_metadata (workflow/schemas/config.schema.yaml)
SAMPLE_FIELDS = (
    "assay_ontology_term_id",
    "tissue_ontology_term_id",
    "tissue_type",
    "disease_ontology_term_id",
    "sex_ontology_term_id",
    "development_stage_ontology_term_id",
    "self_reported_ethnicity_ontology_term_id",
    "suspension_type",
    "is_primary_data",
)
CURIE = re.compile(r"^[A-Za-z][A-Za-z0-9]*:[0-9A-Za-z_]+$")
# the literal values the schema allows besides ontology terms, per field
LITERALS = {
    "tissue_type": {"tissue", "organoid", "cell culture", "primary cell culture", "cell line"},
    "suspension_type": {"cell", "nucleus", "na"},
    "sex_ontology_term_id": {"unknown", "na"},
    "development_stage_ontology_term_id": {"unknown", "na"},
    "self_reported_ethnicity_ontology_term_id": {"unknown", "na"},
    "is_primary_data": {"true", "false"},
}
# organism -> the shipped gene reference (tools/gen_cellxgene_genes.py)
GENE_REFERENCES = {
    "NCBITaxon:9606": "genes_homo_sapiens.txt.gz",
    "NCBITaxon:10090": "genes_mus_musculus.txt.gz",
}


def check_export_config(config: Mapping, samples: pd.DataFrame, root: str | Path) -> dict:
    """The resolved export settings: cellxgene, cellbrowser (bool), and with cellxgene on, title,
    organism, gene_reference (the shipped file for the organism, under `root`), donor_column,
    cell_type_ontology (label -> CL id) and samples (sample -> {field: value}).

    Raises InputError naming the option or the sheet column and sample for a value that is no
    ontology term nor one of the field's literals, or an organism without a shipped gene reference.
    """
    export = dict(config.get("export") or {})
    settings = {
        "cellxgene": bool(export.get("cellxgene", True)),
        "cellbrowser": bool(export.get("cellbrowser", True)),
    }
    if not settings["cellxgene"]:
        return settings
    metadata = dict(export.get("cellxgene_metadata") or {})
    organism = str(metadata.get("organism_ontology_term_id", "NCBITaxon:9606"))
    if organism not in GENE_REFERENCES:
        raise InputError(
            f"config: export.cellxgene_metadata.organism_ontology_term_id {organism!r} has no shipped gene "
            f"reference (there are {', '.join(GENE_REFERENCES)}); set export.cellxgene: false for this organism."
        )
    donor_column = str(metadata.get("donor_column") or "donor")
    if donor_column not in samples.columns:
        raise InputError(
            f"config: export.cellxgene_metadata.donor_column {donor_column!r} is not a sample sheet column "
            f"(it has {', '.join(samples.columns)})."
        )
    per_sample = {}
    for sample, row in samples.iterrows():
        values = {}
        for field in SAMPLE_FIELDS:
            cell = row.get(field, "") if field in samples.columns else ""
            given = not (
                cell is None or (isinstance(cell, float) and cell != cell) or str(cell).strip() == ""
            )
            value = str(cell).strip() if given else metadata.get(field)
            where = (
                f"sample sheet column {field} of sample {sample!r}"
                if given
                else f"config: export.cellxgene_metadata.{field}"
            )
            values[field] = _checked(field, value, where)
        values["donor_id"] = str(row[donor_column])
        per_sample[str(sample)] = values
    ontology = {str(k): str(v) for k, v in (export.get("cell_type_ontology") or {}).items()}
    for label, term in ontology.items():
        if not re.fullmatch(r"CL:\d{7}", term):
            raise InputError(
                f"config: export.cell_type_ontology maps {label!r} to {term!r}, which is no Cell Ontology id (CL:0000000)."
            )
    title = export.get("title") or (config.get("report") or {}).get("title") or "sccohort"
    settings.update(
        title=str(title),
        organism=organism,
        gene_reference=str(Path(root) / "workflow" / "resources" / "cellxgene" / GENE_REFERENCES[organism]),
        donor_column=donor_column,
        cell_type_ontology=ontology,
        samples=per_sample,
    )
    return settings


def _checked(field: str, value, where: str):
    """`value` of `field` (is_primary_data as a bool); InputError naming `where` when it is neither
    an ontology term (PREFIX:ID) nor one of the field's literals."""
    text = str(value).strip().lower() if isinstance(value, bool) else str(value).strip()
    if field == "is_primary_data":
        if text.lower() not in LITERALS[field]:
            raise InputError(f"{where}: is_primary_data {value!r} must be true or false.")
        return text.lower() == "true"
    if text in LITERALS.get(field, set()) or (
        field not in ("tissue_type", "suspension_type") and CURIE.match(text)
    ):
        return text
    allowed = sorted(LITERALS.get(field, set()))
    kind = (
        "one of " + ", ".join(allowed)
        if field in ("tissue_type", "suspension_type")
        else "an ontology term (e.g. EFO:0009922)"
    )
    if allowed and field not in ("tissue_type", "suspension_type"):
        kind += " or " + ", ".join(allowed)
    raise InputError(f"{where}: {field} {value!r} is not {kind}.")
