"""sccohort.de.pseudobulk: file-safe group names, sums per sample x group, the pseudobulk files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sccohort.de import pseudobulk as pb
from sccohort.errors import InputError
from sccohort.names import safe_name, safe_names


def test_safe_name_makes_file_names_and_keeps_them_unique():
    assert safe_name("CD14 Mono") == "CD14_Mono"
    assert safe_name("CD4+ T cells") == "CD4_T_cells"
    assert safe_name("B cells (naive)/memory") == "B_cells_naive_memory"
    assert safe_name("  ") == "group"
    assert "__" not in safe_name("a + + b")
    mapping = safe_names(["CD14+ Mono", "CD14- Mono", "CD14 Mono", "summary", "NK"])
    assert len(set(mapping.values())) == 5
    assert mapping["NK"] == "NK" and mapping["CD14- Mono"] == "CD14-_Mono"
    assert mapping["summary"] != "summary"  # reserved file names are never handed out


def test_pseudobulk_sums_raw_counts_per_sample_and_group(control_cells, tmp_path):
    adata = control_cells
    counts, meta = pb.pseudobulk(adata, group_by="cell_type", layer=None, covariates=["donor"])
    # n_cells per (sample, group) is the cross-tabulation of the cells.
    table = pd.crosstab(adata.obs["sample"].astype(str), adata.obs["cell_type"].astype(str))
    for _, row in meta.iterrows():
        assert row["n_cells"] == table.loc[row["sample"], row["group"]]
        cells = ((adata.obs["sample"] == row["sample"]) & (adata.obs["cell_type"] == row["group"])).to_numpy()
        expected = np.asarray(adata.X[cells].sum(axis=0)).ravel()
        np.testing.assert_array_equal(counts.loc[row["pseudobulk"]].to_numpy(), expected)
        assert row["donor"] == row["sample"]
    assert meta["n_cells"].sum() == adata.n_obs
    assert counts.to_numpy().dtype == np.int64
    assert set(meta["group_file"]) == {"CD14_Monocytes", "B_cells", "CD4_T_cells"}
    # Round trip through the files the rule writes (genes x pseudobulk samples).
    pb.write_pseudobulk(
        counts, meta, counts_path=tmp_path / "counts.tsv.gz", metadata_path=tmp_path / "metadata.tsv"
    )
    wide = pd.read_csv(tmp_path / "counts.tsv.gz", sep="\t", index_col=0)
    assert wide.shape == (adata.n_vars, len(meta))
    back_counts, back_meta = pb.read_pseudobulk(tmp_path / "counts.tsv.gz", tmp_path / "metadata.tsv")
    pd.testing.assert_frame_equal(back_counts, counts, check_names=False)
    assert back_meta["n_cells"].tolist() == meta["n_cells"].tolist()


def test_pseudobulk_rejects_normalised_data_and_unknown_columns(control_cells):
    adata = control_cells[:200].copy()
    logged = adata.copy()
    logged.X = logged.X.copy()
    logged.X.data = np.log1p(logged.X.data)
    with pytest.raises(InputError, match="non-integer"):
        pb.pseudobulk(logged, group_by="cell_type", layer=None)
    with pytest.raises(InputError, match="leiden_0.5"):
        pb.pseudobulk(adata, group_by="leiden_0.5", layer=None)
    with pytest.raises(InputError, match="batch"):
        pb.pseudobulk(adata, group_by="cell_type", layer=None, covariates=["batch"])
    varying = adata.copy()
    varying.obs["donor"] = np.where(np.arange(varying.n_obs) % 2, "a", "b")
    with pytest.raises(InputError, match="vary within sample"):
        pb.pseudobulk(varying, group_by="cell_type", layer=None, covariates=["donor"])
