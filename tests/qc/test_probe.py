"""DAG-time checks: structural faults and bad first counts are found from headers, and the
inspection agrees with the full reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sccohort.errors import InputError
from sccohort.qc.load import read_sample
from sccohort.qc.probe import inspect_input, probe_input

DATA = Path(__file__).parents[1] / "data" / "10x"
V3_MTX = DATA / "3.0.0" / "filtered_feature_bc_matrix"
V3_H5 = DATA / "3.0.0" / "filtered_feature_bc_matrix.h5"
V2_MTX = DATA / "1.2.0" / "filtered_gene_bc_matrices" / "hg19_chr21"
V2_H5 = DATA / "1.2.0" / "filtered_gene_bc_matrices_h5.h5"
TWO_GENOMES = DATA / "1.2.0" / "multiple_genomes.h5"
PBMC_1K = DATA / "pbmc_1k_v2" / "pbmc_1k_v2_filtered_feature_bc_matrix.h5"


def test_probe_catches_structural_faults_without_reading_data(tmp_path):
    assert probe_input(V3_H5) == "10x_h5"
    assert probe_input(V3_MTX) == "10x_mtx"
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(V3_H5.read_bytes()[:20000])
    with pytest.raises(InputError, match="corrupt or truncated"):
        probe_input(truncated)
    incomplete = tmp_path / "nobarcodes"
    shutil.copytree(V3_MTX, incomplete)
    (incomplete / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match="no barcodes.tsv"):
        probe_input(incomplete)
    with pytest.raises(InputError, match="several genomes"):
        probe_input(TWO_GENOMES)
    adata = read_sample(V3_H5)
    adata.write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(InputError, match="no layer 'counts'"):
        probe_input(tmp_path / "x.h5ad", counts_layer="counts")


@pytest.mark.parametrize(
    ("path", "layer", "genome"),
    [(V3_MTX, None, None), (V3_H5, None, None), (V2_MTX, None, None), (V2_H5, None, "hg19_chr21"),
     (PBMC_1K, None, None), ("h5ad-sparse", None, None), ("h5ad-dense-layer", "counts", None)],
    ids=["v3-mtx", "v3-h5", "v2-mtx", "v2-h5", "pbmc1k-h5", "h5ad-sparse", "h5ad-dense-layer"],
)  # fmt: skip
def test_inspect_input_reads_shape_and_genes_like_the_reader(tmp_path, path, layer, genome):
    """The DAG-time inspection agrees with the full reader on cells, genes and gene ids."""
    if path == "h5ad-sparse":
        path = tmp_path / "x.h5ad"
        read_sample(V3_H5).write_h5ad(path)
    elif path == "h5ad-dense-layer":
        adata = read_sample(V3_H5)
        adata.layers["counts"] = adata.X.toarray()
        adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))
        path = tmp_path / "x.h5ad"
        adata.write_h5ad(path)
    summary = inspect_input(path, counts_layer=layer, genome=genome)
    full = read_sample(path, counts_layer=layer, genome=genome)
    assert (summary.n_cells, summary.n_genes) == full.shape
    assert list(summary.gene_ids) == list(full.var["gene_id"])
    assert list(summary.gene_symbols) == list(full.var["gene_symbol"])


def test_inspect_input_refuses_from_the_head_of_the_data(tmp_path):
    adata = read_sample(V3_H5)
    normalised = adata.copy()
    normalised.layers["counts"] = adata.X.copy()
    normalised.X = sp.csr_matrix(np.log1p(adata.X.toarray()))
    normalised.write_h5ad(tmp_path / "norm.h5ad")
    with pytest.raises(
        InputError, match=r"non-integer values in X .*Layers that look like raw counts: counts"
    ):
        inspect_input(tmp_path / "norm.h5ad")
    negative = adata.copy()
    negative.X = -negative.X
    negative.write_h5ad(tmp_path / "neg.h5ad")
    with pytest.raises(InputError, match="neg.h5ad contains negative counts"):
        inspect_input(tmp_path / "neg.h5ad")
    adata[:0].copy().write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(InputError, match="empty.h5ad holds an empty matrix"):
        inspect_input(tmp_path / "empty.h5ad")
    with pytest.raises(InputError, match="has no genome 'mm10'"):
        inspect_input(V2_H5, genome="mm10")


def test_anndata_and_cell_ranger_files_behind_each_others_extension(tmp_path):
    as_h5 = tmp_path / "sample.h5"
    read_sample(V3_H5).write_h5ad(as_h5)
    for check in (probe_input, read_sample):
        with pytest.raises(
            InputError, match=r"is an AnnData file .* with a .h5 extension; rename it to .h5ad"
        ):
            check(as_h5)
    as_h5ad = tmp_path / "sample.h5ad"
    shutil.copyfile(V3_H5, as_h5ad)
    with pytest.raises(
        InputError, match=r"is a Cell Ranger matrix .* with an .h5ad extension; rename it to .h5"
    ):
        probe_input(as_h5ad)


def test_unreadable_input_says_permission_denied(tmp_path):
    import errno
    import os

    from sccohort.qc.load import unreadable

    message = str(
        unreadable("Input x.h5", "could not be read", PermissionError(errno.EACCES, "Permission denied"))
    )
    assert message.startswith("Input x.h5 cannot be read: permission denied") and "chmod" in message
    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    folder = tmp_path / "sample"
    shutil.copytree(V3_MTX, folder)
    (folder / "features.tsv.gz").chmod(0)
    h5 = tmp_path / "sample.h5"
    shutil.copyfile(V3_H5, h5)
    h5.chmod(0)
    for path in (folder, h5):
        with pytest.raises(InputError, match="cannot be read: permission denied"):
            inspect_input(path)


def _mtx_copy(tmp_path: Path, edit_matrix=None, edit_barcodes=None) -> Path:
    """A copy of the v3 mtx folder with its matrix lines and/or barcode lines edited."""
    import gzip

    folder = tmp_path / "mtx"
    shutil.copytree(V3_MTX, folder)
    for name, edit in (("matrix.mtx.gz", edit_matrix), ("barcodes.tsv.gz", edit_barcodes)):
        if edit is not None:
            lines = gzip.decompress((folder / name).read_bytes()).decode().splitlines()
            (folder / name).write_bytes(gzip.compress(("\n".join(edit(lines)) + "\n").encode()))
    return folder


def _as_pattern(lines: list[str]) -> list[str]:
    """The same matrix declared 'pattern': entries without values (every count would read as 1)."""
    body = [" ".join(line.split()[:2]) if not line.startswith("%") else line for line in lines[2:]]
    return ["%%MatrixMarket matrix coordinate pattern general", lines[1], *body]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: _as_pattern(lines), "'pattern' matrix stores where counts are"),
        (
            lambda lines: ["%%MatrixMarket matrix array integer general", *lines[1:]],
            "'array' matrix is dense",
        ),
        (lambda lines: ["%%MatrixMarket matrix coordinate integer symmetric", *lines[1:]], "general"),
        (lambda lines: [*lines[:3], "99999 1 5", *lines[4:]], r"entry 1 \('99999 1 5'\) lies outside"),
    ],
    ids=["pattern", "array", "symmetric", "entry-out-of-bounds"],
)
def test_matrix_market_header_and_entries_checked_at_dag_time(tmp_path, edit, message):
    """A count matrix must be 'coordinate integer general' with entries inside its dimensions; a
    pattern matrix is also refused by the full reader, which would read every count as 1."""
    folder = _mtx_copy(tmp_path, edit_matrix=edit)
    with pytest.raises(InputError, match=message):
        inspect_input(folder)
    if "pattern" in message:
        with pytest.raises(InputError, match=message):
            read_sample(folder)


@pytest.mark.parametrize(
    ("edit", "raw", "message"),
    [
        (lambda lines: lines[:-10], None, "1107 cells but .* barcodes.tsv.gz 1097 barcodes"),
        (
            lambda lines: [*lines, "AAAAAAAAAAAAAAAA-1"],
            None,
            "barcodes.tsv.gz 1108 barcodes; the files do not",
        ),
        (None, b"", "barcodes.tsv.gz 0 barcodes"),
        (None, b"AAACCTGAGCATCATC-1\n", "barcodes.tsv.gz could not be read"),
    ],
    ids=["ten-short", "one-extra", "empty-file", "not-gzipped"],
)
def test_barcodes_file_checked_at_dag_time(tmp_path, edit, raw, message):
    """The barcodes must be one per matrix column, in a readable file, before any job runs."""
    folder = _mtx_copy(tmp_path, edit_barcodes=edit)
    if raw is not None:
        (folder / "barcodes.tsv.gz").write_bytes(raw)
    with pytest.raises(InputError, match=message):
        inspect_input(folder)
