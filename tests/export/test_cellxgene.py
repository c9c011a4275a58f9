"""results/export/cellxgene.h5ad: the CELLxGENE schema's object (validated offline with the pinned
cellxgene-schema in its own venv), genes the schema's reference lacks dropped and counted, the
workflow's labels with their Cell Ontology ids."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from export.conftest import offline_prefix
from sccohort.export import check_export_config
from sccohort.export.cellxgene import build_cellxgene, read_cl_ids, read_gene_reference

REPO = Path(__file__).resolve().parents[2]
MARKERS = REPO / "workflow" / "resources" / "markers" / "human_pbmc.tsv"
HUMAN_GENES = REPO / "workflow" / "resources" / "cellxgene" / "genes_homo_sapiens.txt.gz"


def integrated_like(n_cells: int = 40) -> ad.AnnData:
    """An object laid out like integrated.h5ad: log-normalised X, counts layer, var gene_id."""
    rng = np.random.default_rng(0)
    reference = sorted(read_gene_reference(HUMAN_GENES))[:8]
    ids = reference + ["ENSG99999999991", "ENSG99999999992"]  # two ids the reference lacks
    counts = sp.csr_matrix(rng.poisson(1.0, (n_cells, len(ids))).astype(np.float32))
    X = counts.copy()
    X.data = np.log1p(X.data)
    labels = np.array(["B", "CD4_T", "T", "Unknown"])[np.arange(n_cells) % 4]
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(np.where(np.arange(n_cells) < n_cells // 2, "a", "b")),
            "condition": pd.Categorical(["x"] * n_cells),
            "sex": pd.Categorical(["f"] * n_cells),  # a sheet covariate named like a schema label
            "cell_type": pd.Categorical(labels, categories=["B", "CD4_T", "T", "Unknown"]),
            "leiden_0.5": pd.Categorical((np.arange(n_cells) % 3).astype(str)),
            "total_counts": np.asarray(counts.sum(axis=1)).ravel(),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {"gene_id": ids, "gene_symbol": [f"G{i}" for i in range(len(ids))]},
        index=[f"G{i}" for i in range(len(ids))],
    )
    adata = ad.AnnData(X=X, obs=obs, var=var, layers={"counts": counts})
    adata.obsm["X_umap"] = rng.normal(size=(n_cells, 2))
    adata.uns["cell_type_colors"] = np.array(["#1f77b4", "#ff7f0e", "#2ca02c", "#cccccc"])
    adata.uns["annotation"] = {"methods": {"markers": "cell_type"}}
    return adata


def settings_for(samples=("a", "b")) -> dict:
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sheet = pd.DataFrame({"sample": list(samples), "donor": ["d1", "d2"]}).set_index("sample", drop=False)
    return check_export_config(config, sheet, REPO)


def test_build_cellxgene_lays_out_the_schema():
    adata = integrated_like()
    out, dropped, summary = build_cellxgene(
        adata,
        reference=read_gene_reference(HUMAN_GENES),
        settings=settings_for(),
        cl_ids=read_cl_ids(MARKERS),
    )
    # Ensembl ids as the index, the two unknown ones dropped, listed and counted
    assert list(out.var_names) == list(adata.var["gene_id"][:8])
    assert list(dropped["gene_id"]) == ["ENSG99999999991", "ENSG99999999992"]
    assert summary["n_genes_dropped"] == 2 and summary["n_genes_kept"] == 8
    assert not out.var["feature_is_filtered"].any()
    # raw counts in raw.X (integers), log-normalised X
    np.testing.assert_array_equal(out.raw.X.toarray(), adata.layers["counts"][:, :8].toarray())
    np.testing.assert_allclose(out.X.toarray(), adata.X[:, :8].toarray())
    # labels: CL ids from the marker table's cl_id, the parent T from export.cell_type_ontology,
    # Unknown -> unknown; the label itself as author_cell_type, no reserved cell_type column
    terms = dict(
        zip(
            out.obs["author_cell_type"].astype(str),
            out.obs["cell_type_ontology_term_id"].astype(str),
            strict=True,
        )
    )
    assert terms == {"B": "CL:0000236", "CD4_T": "CL:0000624", "T": "CL:0000084", "Unknown": "unknown"}
    assert "cell_type" not in out.obs and "sex" not in out.obs and "author_sex" in out.obs
    assert set(out.obs["donor_id"]) == {"d1", "d2"} and out.obs["is_primary_data"].all()
    assert out.uns["organism_ontology_term_id"] == "NCBITaxon:9606" and out.uns["title"]
    assert list(out.uns["author_cell_type_colors"]) == list(adata.uns["cell_type_colors"])
    assert "X_umap" in out.obsm and out.uns["default_embedding"] == "X_umap"


def test_labels_without_an_id_are_unknown_and_reported():
    adata = integrated_like()
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.rename_categories({"B": "Mystery"})
    out, _, summary = build_cellxgene(
        adata, reference=read_gene_reference(HUMAN_GENES), settings=settings_for(), cl_ids={}
    )
    assert summary["labels_without_cell_ontology_id"] == ["CD4_T", "Mystery"]
    assert set(out.obs.loc[out.obs["author_cell_type"] == "Mystery", "cell_type_ontology_term_id"]) == {
        "unknown"
    }


def test_shipped_references_match_the_pinned_cellxgene_schema(cellxgene_venv):
    """The shipped gene ids are those cellxgene-schema validates against, and every Cell Ontology
    id the workflow writes (the marker table's cl_id, export.cell_type_ontology's defaults) is a
    current CL term of the ontology cellxgene-schema ships."""
    check = subprocess.run(
        [str(cellxgene_venv / "python"), str(REPO / "tools" / "gen_cellxgene_genes.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    settings = settings_for()
    ids = sorted(set(read_cl_ids(MARKERS).values()) | set(settings["cell_type_ontology"].values()))
    script = (
        "import json, sys\n"
        "from cellxgene_ontology_guide.ontology_parser import OntologyParser\n"
        "p = OntologyParser()\n"
        "ids = json.loads(sys.argv[1])\n"
        "print(json.dumps({i: [p.get_term_label(i), p.is_term_deprecated(i)] for i in ids}))\n"
    )
    result = subprocess.run(
        [*offline_prefix(), str(cellxgene_venv / "python"), "-c", script, json.dumps(ids)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    terms = json.loads(result.stdout.strip().splitlines()[-1])
    assert {i: deprecated for i, (_, deprecated) in terms.items() if deprecated} == {}
    assert terms["CL:0000236"][0] == "B cell" and terms["CL:0001054"][0] == "CD14-positive monocyte"


@pytest.mark.slow
def test_full_run_export_validates_with_cellxgene_schema(full_run, cellxgene_venv):
    export = full_run / "results" / "export"
    path = export / "cellxgene.h5ad"
    result = subprocess.run(
        [*offline_prefix(), str(cellxgene_venv / "cellxgene-schema"), "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "is_valid=True" in result.stdout + result.stderr
    summary = json.loads((export / "cellxgene_summary.json").read_text())
    dropped = pd.read_csv(export / "cellxgene_dropped_genes.tsv", sep="\t")
    integrated = ad.read_h5ad(full_run / "results" / "cohort" / "integrated.h5ad", backed="r")
    exported = ad.read_h5ad(path, backed="r")
    assert summary["n_genes_dropped"] == len(dropped) and len(dropped) > 0
    assert exported.n_vars + len(dropped) == integrated.n_vars == summary["n_genes_in"]
    assert not set(dropped["gene_id"]) & set(exported.var_names)
    with gzip.open(HUMAN_GENES, "rt") as handle:
        assert set(exported.var_names) <= {line.strip() for line in handle}
    log = (full_run / "logs" / "export" / "export_cellxgene.log").read_text()
    assert f"{len(dropped)} dropped" in log
