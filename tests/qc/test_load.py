"""Readers: every supported layout gives the same checked AnnData; bad matrices are refused by name."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from sccohort.errors import InputError
from sccohort.qc.load import check_counts, detect_format, read_sample

DATA = Path(__file__).parents[1] / "data" / "10x"
V3_MTX = DATA / "3.0.0" / "filtered_feature_bc_matrix"
V3_H5 = DATA / "3.0.0" / "filtered_feature_bc_matrix.h5"
V2_MTX = DATA / "1.2.0" / "filtered_gene_bc_matrices" / "hg19_chr21"
V2_H5 = DATA / "1.2.0" / "filtered_gene_bc_matrices_h5.h5"
TWO_GENOMES = DATA / "1.2.0" / "multiple_genomes.h5"
PBMC_1K = DATA / "pbmc_1k_v2" / "pbmc_1k_v2_filtered_feature_bc_matrix.h5"


def assert_same_counts(ours: ad.AnnData, theirs: ad.AnnData) -> None:
    assert ours.shape == theirs.shape
    assert list(ours.obs_names) == list(theirs.obs_names)
    assert abs(ours.X - sp.csr_matrix(theirs.X)).sum() == 0


@pytest.mark.parametrize(
    ("path", "scanpy_reader"),
    [
        (V3_MTX, lambda p: sc.read_10x_mtx(p, var_names="gene_symbols")),
        (V3_H5, sc.read_10x_h5),
        (V2_MTX, lambda p: sc.read_10x_mtx(p, var_names="gene_symbols")),
        (V2_H5, lambda p: sc.read_10x_h5(p, genome="hg19_chr21")),
        (PBMC_1K, sc.read_10x_h5),
    ],
    ids=["v3-mtx-gz", "v3-h5", "v2-mtx", "v2-h5", "pbmc1k-h5"],
)
def test_readers_match_scanpy(path, scanpy_reader):
    ours = read_sample(path)
    assert_same_counts(ours, scanpy_reader(path))
    assert {"gene_id", "gene_symbol", "feature_types"} <= set(ours.var.columns)
    assert ours.var_names.is_unique
    assert sp.isspmatrix_csr(ours.X) and ours.X.dtype == np.float32


def test_v3_ids_and_symbols_kept():
    adata = read_sample(V3_H5)
    assert adata.var["gene_id"].str.startswith("ENSG").all()
    assert adata.var["gene_symbol"].iloc[0] != adata.var["gene_id"].iloc[0]


def test_v2_genes_gzipped_and_v3_uncompressed(tmp_path):
    v2_gz = tmp_path / "v2gz"
    v2_gz.mkdir()
    for name in ("matrix.mtx", "genes.tsv", "barcodes.tsv"):
        with open(V2_MTX / name, "rb") as src, gzip.open(v2_gz / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    v3_plain = tmp_path / "v3plain"
    v3_plain.mkdir()
    for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
        with gzip.open(V3_MTX / f"{name}.gz", "rb") as src, open(v3_plain / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert_same_counts(read_sample(v2_gz), read_sample(V2_MTX))
    assert_same_counts(read_sample(v3_plain), read_sample(V3_MTX))


def test_v2_h5_with_several_genomes_needs_a_genome():
    with pytest.raises(InputError, match="genome column"):
        read_sample(TWO_GENOMES)
    assert read_sample(TWO_GENOMES, genome="hg19_chr21").n_obs == 12


def test_duplicate_symbols_made_unique_ids_kept(tmp_path):
    adata = read_sample(V3_H5)
    var = adata.var.copy()
    var.loc[var.index[1], "gene_symbol"] = var["gene_symbol"].iloc[0]
    var.index = var["gene_symbol"].to_numpy()
    clone = ad.AnnData(X=adata.X, obs=adata.obs, var=var)
    clone.layers["counts"] = clone.X.copy()
    clone.write_h5ad(tmp_path / "dup.h5ad")
    back = read_sample(tmp_path / "dup.h5ad")
    assert back.var_names.is_unique
    assert back.var_names[1] == back.var_names[0] + "-1"
    assert back.var["gene_symbol"].iloc[1] == back.var["gene_symbol"].iloc[0]


def test_h5ad_counts_in_layer_and_normalised_x_refused(tmp_path):
    raw = read_sample(V3_H5)
    normalised = raw.copy()
    normalised.layers["counts"] = raw.X.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    path = tmp_path / "normalised.h5ad"
    normalised.write_h5ad(path)
    with pytest.raises(InputError, match=r"does not hold raw integer counts.*counts"):
        read_sample(path)
    assert_same_counts(read_sample(path, counts_layer="counts"), raw)
    with pytest.raises(InputError, match="no layer 'spliced'"):
        read_sample(path, counts_layer="spliced")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda X: X * 0.5, "non-integer"),
        (lambda X: X.multiply(-1).tocsr(), "negative"),
    ],
    ids=["non-integer", "negative"],
)
def test_bad_counts_refused(tmp_path, mutate, message):
    adata = read_sample(V3_H5)
    adata.X = sp.csr_matrix(mutate(adata.X))
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(InputError, match=str(path).replace(".", r"\.")):
        read_sample(path)
    with pytest.raises(InputError, match=message):
        check_counts(adata, path)


def test_duplicate_barcodes_and_empty_matrix_refused(tmp_path):
    adata = read_sample(V3_H5)
    doubled = ad.concat([adata[:5], adata[:5]])
    doubled.var = adata.var
    doubled.write_h5ad(tmp_path / "dup.h5ad")
    with pytest.raises(InputError, match="duplicate barcodes"):
        read_sample(tmp_path / "dup.h5ad")
    adata[:0].copy().write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(InputError, match="empty matrix"):
        read_sample(tmp_path / "empty.h5ad")


def test_wrong_format_truncated_and_incomplete_inputs(tmp_path):
    text_as_h5 = tmp_path / "sample.h5"
    text_as_h5.write_text("barcode,gene,count\n")
    with pytest.raises(InputError, match="not an HDF5 file"):
        read_sample(text_as_h5)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(V3_H5.read_bytes()[:20000])
    with pytest.raises(InputError, match="truncated.h5"):
        read_sample(truncated)
    incomplete = tmp_path / "nobarcodes"
    shutil.copytree(V3_MTX, incomplete)
    (incomplete / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match="no barcodes.tsv"):
        read_sample(incomplete)
    with pytest.raises(InputError, match="does not exist"):
        detect_format(tmp_path / "missing.h5")
    with pytest.raises(InputError, match="unknown format"):
        detect_format(_touch(tmp_path / "x.csv"))


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def test_count_value_messages_name_the_input():
    """load's messages (the ones tests/workflow/test_bad_inputs.py reads), on the shared integer check."""
    from sccohort.qc.load import check_count_values

    check_count_values(np.array([0.0, 3.0, 12.0]), "x.h5")
    check_count_values(np.array([]), "x.h5")
    with pytest.raises(InputError, match=r"^Input x\.h5 contains negative counts \(head\); .*raw UMI counts"):
        check_count_values(np.array([1.0, -2.0]), "x.h5", " (head)")
    for values in ([1.0, 0.5], [1.0, np.nan], [1.0, np.inf]):
        with pytest.raises(InputError, match=r"^Input x\.h5 contains non-integer values .*raw UMI counts"):
            check_count_values(np.array(values), "x.h5")
    with pytest.raises(InputError, match="not numeric"):
        check_count_values(np.array(["a"]), "x.h5")


def _with_feature_names(source: Path, target: Path, names: dict[int, str]) -> Path:
    """A copy of a Cell Ranger v3 .h5 with some feature names replaced (stored as UTF-8 bytes, as
    Cell Ranger stores them)."""
    import h5py

    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as handle:
        features = handle["matrix/features"]
        stored = [bytes(v) for v in features["name"][:]]
        for i, name in names.items():
            stored[i] = name.encode("utf-8")
        del features["name"]
        features.create_dataset("name", data=np.array(stored, dtype=f"S{max(map(len, stored))}"))
    return target


def test_non_ascii_feature_names_in_cell_ranger_h5_are_read_as_utf8(tmp_path):
    from sccohort.qc.probe import inspect_input

    path = _with_feature_names(V3_H5, tmp_path / "unicode.h5", {0: "Ωmega-1", 1: "naïve-gene"})
    adata = read_sample(path)
    assert list(adata.var["gene_symbol"][:2]) == ["Ωmega-1", "naïve-gene"]
    assert_same_counts(adata, read_sample(V3_H5))
    assert list(inspect_input(path).gene_symbols[:2]) == ["Ωmega-1", "naïve-gene"]


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _scramble(path: Path) -> None:
    """Overwrite bytes near the start of a gzip stream (a disk or transfer error): zlib.error."""
    data = bytearray(path.read_bytes())
    data[200:264] = bytes(range(64))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("matrix.mtx.gz", lambda p: _truncate(p, 0.8)),  # EOFError: "Compressed file ended ..."
        ("matrix.mtx.gz", _scramble),  # zlib.error / BadGzipFile
        ("features.tsv.gz", lambda p: _truncate(p, 0.5)),
        ("barcodes.tsv.gz", _scramble),
    ],
    ids=["truncated-matrix", "corrupt-matrix", "truncated-features", "corrupt-barcodes"],
)
def test_damaged_gzip_files_are_refused_by_name(tmp_path, name, damage):
    from sccohort.qc.probe import inspect_input

    folder = tmp_path / "sample"
    shutil.copytree(V3_MTX, folder)
    damage(folder / name)
    with pytest.raises(InputError, match=rf"Input {folder}.* the file may be corrupt, truncated"):
        read_sample(folder)
    if name == "features.tsv.gz":  # read whole when the DAG is built
        with pytest.raises(InputError, match=rf"Input {folder}.*features.tsv.gz"):
            inspect_input(folder)


def test_load_sample_errors_name_the_sample(tmp_path):
    import logging

    from sccohort.qc import load_sample

    folder = tmp_path / "sample"
    shutil.copytree(V3_MTX, folder)
    _truncate(folder / "matrix.mtx.gz", 0.8)
    with pytest.raises(InputError, match=rf"^Sample 'S1': Input {folder}: matrix.mtx.gz could not be read"):
        load_sample(
            matrix=str(folder),
            output=str(tmp_path / "raw.h5ad"),
            sample_row={"sample": "S1"},
            covariates=[],
            log=logging.getLogger("test"),
        )
    assert not list(tmp_path.glob("*.h5ad")) and not list(tmp_path.glob(".*partial"))
