"""Fine-level accuracy of the whole workflow (default config) against published labels of real
PBMC data, as a new user would run it: each data set is cut into samples, run from the counts to
results/cohort/integrated.h5ad, and every cell's label compared with its published one (Unknown
and parent labels such as T count as wrong). The same cells are also labelled by the plain
alternative (scanpy's score_genes per marker set, mean per Leiden cluster at resolution 1, the
best set) on the workflow's own clusters, and ours must beat it.

Data (tests/data/annotation, PROVENANCE.md): Kang et al. 2018 control and IFN-beta PBMC from
muscat (2 donors x 2 conditions, 1,556 cells; 8 control donors, 250 cells each), and 10x pbmc4k
with the SoupX authors' labels (2,170 cells, two halves).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from annotate.annotation_data import DATA, plain_scanpy_labels
from helpers import REPO, run_workflow

# Published labels -> the shipped table's types.
KANG_FINE = {
    "CD4 T cells": "CD4_T",
    "CD8 T cells": "CD8_T",
    "NK cells": "NK",
    "B cells": "B",
    "CD14+ Monocytes": "CD14_Mono",
    "FCGR3A+ Monocytes": "FCGR3A_Mono",
    "Dendritic cells": "cDC",
    "Megakaryocytes": "Platelet",
}
# SoupX authors' clusters -> types: their MNP label covers classical monocytes (cluster 0),
# non-classical monocytes (9, FCGR3A/CDKN1C) and cDC (10, FCER1A/CD1C); "?" (11) are pDC
# (LILRA4); their NK label covers NK cells (8) and cluster 6, CD3+ (94% CD3D), TRDC+/TRGC+ and
# KLRB1+ gamma-delta and MAIT T cells, which carry T-cell markers and no KLRF1/FCER1G: counted
# as right when labelled CD8_T (the cytotoxic T cells of the table) or NK.
SOUPX_FINE = {
    "0": "CD14_Mono",
    "9": "FCGR3A_Mono",
    "10": "cDC",
    "11": "pDC",
    "1": "CD4_T",
    "2": "CD4_T",
    "3": "CD8_T",
    "5": "CD8_T",
    "4": "B",
    "7": "B",
    "8": "NK",
}
SOUPX_T_CLUSTER_CALLED_NK = "6"
# The plain alternative's marker sets (scanpy PBMC3k tutorial markers, with CD4/CCR7 for CD4 T).
PLAIN_SETS = {
    "CD4_T": ["IL7R", "CD4", "CCR7"],
    "CD8_T": ["CD8A", "CD8B"],
    "NK": ["GNLY", "NKG7", "KLRF1"],
    "B": ["MS4A1", "CD79A"],
    "CD14_Mono": ["CD14", "LYZ"],
    "FCGR3A_Mono": ["FCGR3A", "MS4A7"],
    "cDC": ["FCER1A", "CST3"],
    "Platelet": ["PPBP"],
}


def write_project(
    root: Path, parts: dict[str, ad.AnnData], sheet: pd.DataFrame, *, de: dict | None = None
) -> Path:
    """A runnable project: one .h5ad of raw counts per sample, the sheet and the default config
    (DE off: no contrast, unless `de` gives the DE options to change, contrasts included)."""
    (root / "data").mkdir(parents=True)
    (root / "config").mkdir()
    for sample, adata in parts.items():
        ad.AnnData(
            X=sp.csr_matrix(adata.X, dtype=np.float32),
            obs=pd.DataFrame(index=adata.obs_names),
            var=pd.DataFrame(index=adata.var_names),
        ).write_h5ad(root / "data" / f"{sample}.h5ad")
    sheet.assign(path=[f"data/{s}.h5ad" for s in sheet["sample"]]).to_csv(
        root / "config" / "samples.tsv", sep="\t", index=False
    )
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples"] = "config/samples.tsv"
    config["de"]["contrasts"] = []
    config["de"].update(de or {})
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def run_and_compare(
    root: Path, truth: pd.Series, *, accept: dict | None = None, targets: tuple[str, ...] = ()
) -> dict:
    """Run the workflow to integrated.h5ad (and `targets`); (ours, plain) fine-level accuracy over
    the cells kept (truth indexed by the cohort's cell id "<sample>_<barcode>"); `accept`: cell id
    -> further labels counted as right."""
    run_workflow(root, "results/cohort/integrated.h5ad", *targets)
    adata = ad.read_h5ad(root / "results" / "cohort" / "integrated.h5ad")
    truth = truth.reindex(adata.obs_names)
    keep = truth.notna().to_numpy()
    ours = adata.obs["cell_type"].astype(str)
    plain = plain_scanpy_labels(adata, PLAIN_SETS, cluster_key="leiden_1.0")
    accept = accept or {}

    def right(labels: pd.Series) -> np.ndarray:
        hit = (labels == truth).to_numpy()
        for cell, allowed in accept.items():
            if cell in labels.index:
                hit[labels.index.get_loc(cell)] |= labels[cell] in allowed
        return hit[keep]

    table = pd.crosstab(truth[keep], ours[keep])
    return {"ours": right(ours).mean(), "plain": right(plain).mean(), "table": table, "adata": adata}


# Interferon-stimulated genes, among the strongest responders to IFN-beta in every PBMC type (Kang
# et al. 2018, Nat Biotechnol 36:89, Fig. 3; ISG lists of Schoggins et al. 2011, Nature 472:481),
# all 20 in the 1,267 genes of the paired subset.
ISGS = ["ISG15", "IFI6", "IFIT3", "MX1", "IFIT1", "ISG20", "OAS1", "IFITM3", "LY6E", "RSAD2", "IFIT2"]
ISGS += ["IFI44L", "MX2", "OAS2", "OAS3", "IFI35", "IRF7", "XAF1", "EPSTI1", "HERC5"]
KANG_CONTRAST = {"name": "stim_vs_ctrl", "factor": "condition", "test": "stim", "reference": "ctrl"}


@pytest.fixture(scope="module")
def kang_paired_run(tmp_path_factory):
    """Kang 2018 donors 101 and 107 in control and IFN-beta, run whole with the default config and
    the paired design (~ donor + condition): annotation and DE of one run."""
    adata = ad.read_h5ad(DATA / "kang_paired_4samples.h5ad")
    samples = list(dict.fromkeys(adata.obs["sample_id"].astype(str)))
    parts = {s: adata[(adata.obs["sample_id"] == s).to_numpy()] for s in samples}
    sheet = pd.DataFrame(
        {"sample": samples, "condition": [s[:-3] for s in samples], "donor": [s[-3:] for s in samples]}
    )
    truth = pd.Series(
        adata.obs["cell_type"].astype(str).map(KANG_FINE).to_numpy(),
        index=[f"{s}_{b}" for s, b in zip(adata.obs["sample_id"].astype(str), adata.obs_names, strict=True)],
    )
    de = {"design": "~ donor + condition", "contrasts": [KANG_CONTRAST]}
    root = write_project(tmp_path_factory.mktemp("kang_paired"), parts, sheet, de=de)
    result = run_and_compare(root, truth, targets=("results/de/summary.tsv",))
    return root, result


@pytest.mark.slow
def test_kang_paired_fine_accuracy(kang_paired_run):
    """Kang 2018, donors 101 and 107 in control and IFN-beta (4 samples, 1,556 cells, 1,267 genes:
    no CD4, CD8B, KLRF1): >= 90% of the cells get their published fine type (CD4 vs CD8 T, CD14 vs
    FCGR3A monocytes), and the plain alternative is beaten by >= 10 points."""
    _, result = kang_paired_run
    assert result["ours"] >= 0.90, (result["ours"], result["table"])
    assert result["ours"] >= result["plain"] + 0.10, (result["ours"], result["plain"])


def isg_recall(table: pd.DataFrame, alpha: float = 0.05) -> float:
    """Share of ISGS called up (padj < alpha, log2 fold change > 0) in a DE table indexed by gene."""
    isg = table.reindex(ISGS)
    return float(((isg["padj"] < alpha) & (isg["log2FoldChange"] > 0)).mean())


def plain_pydeseq2_tables(root: Path, groups) -> dict[str, pd.DataFrame]:
    """The plain alternative on the workflow's own pseudobulk: PyDESeq2 with its defaults for each
    of `groups`, the same design and contrast."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    folder = root / "results" / "de" / "pseudobulk"
    counts = pd.read_csv(folder / "counts.tsv.gz", sep="\t", index_col=0, keep_default_na=False)
    meta = pd.read_csv(folder / "metadata.tsv", sep="\t", dtype=str, keep_default_na=False)
    tables = {}
    for group in groups:
        rows = meta[meta["group"] == group].set_index("pseudobulk")
        dds = DeseqDataSet(
            counts=counts[rows.index].T.astype(int),
            metadata=rows[["donor", "condition"]],
            design="~ donor + condition",
            inference=DefaultInference(n_cpus=1),
            quiet=True,
        )
        dds.deseq2()
        stats = DeseqStats(dds, contrast=["condition", "stim", "ctrl"], inference=DefaultInference(n_cpus=1))
        stats.summary()
        tables[group] = stats.results_df
    return tables


@pytest.mark.slow
def test_kang_paired_interferon_genes_found_in_every_cell_type(kang_paired_run):
    """The real positive of the DE stage, with the workflow's own cell types (issue 17's measure):
    >= 95% of 20 interferon-stimulated genes called up per (cell type, ISG), averaged over every
    tested type, with the default test (limma-voom), and not below plain PyDESeq2 (its defaults) on
    the same pseudobulk (measured: 0.95 against 0.86; CD8 T cells, the smallest group, 0.8 against
    0.5)."""
    root, _ = kang_paired_run
    summary = pd.read_csv(root / "results" / "de" / "summary.tsv", sep="\t", dtype=str, keep_default_na=False)
    tested = summary[summary["status"] == "tested"]
    assert set(tested["method"]) == {"limma_voom"}
    assert {"CD4_T", "CD8_T", "B", "CD14_Mono", "FCGR3A_Mono"} <= set(tested["group"]), tested[
        "group"
    ].tolist()
    ours = {}
    for group, group_file in zip(tested["group"], tested["group_file"], strict=True):
        table = pd.read_csv(root / "results" / "de" / KANG_CONTRAST["name"] / f"{group_file}.tsv", sep="\t")
        ours[group] = isg_recall(table.set_index("gene"))
    plain = {group: isg_recall(table) for group, table in plain_pydeseq2_tables(root, list(ours)).items()}
    ours_mean, plain_mean = np.mean(list(ours.values())), np.mean(list(plain.values()))
    assert ours_mean >= 0.95, ours
    assert ours_mean >= plain_mean, (ours, plain)


@pytest.mark.slow
def test_kang_eight_donors_fine_accuracy(tmp_path):
    """Kang 2018 controls, 8 donors as 8 samples (250 cells each, 1,287 genes: no CD4, CD8A, CD8B,
    MS4A1, KLRF1, PRF1): >= 90% of the cells get their published fine type, >= 3 points above the
    plain alternative; the CD8 T cells are not called NK (<= 10%: their CD3 genes against the NK
    cells' FCER1G/TYROBP, among the lymphocytes) and >= 55% are CD8_T (without CD8A/CD8B their
    cytotoxic genes tell them from the CD4 T cells; the rest, mostly in CD4 T sub-clusters, go
    to CD4_T)."""
    adata = ad.read_h5ad(DATA / "kang_ctrl_8donors_250each.h5ad")
    donors = list(dict.fromkeys(adata.obs["donor"].astype(str)))
    parts = {f"d{d}": adata[(adata.obs["donor"].astype(str) == d).to_numpy()] for d in donors}
    sheet = pd.DataFrame({"sample": list(parts), "condition": ["ctrl"] * len(parts), "donor": donors})
    truth = pd.Series(
        adata.obs["cell_type"].astype(str).map(KANG_FINE).to_numpy(),
        index=[f"d{d}_{b}" for d, b in zip(adata.obs["donor"].astype(str), adata.obs_names, strict=True)],
    )
    result = run_and_compare(write_project(tmp_path / "kang8", parts, sheet), truth)
    assert result["ours"] >= 0.90, (result["ours"], result["table"])
    assert result["ours"] >= result["plain"] + 0.03, (result["ours"], result["plain"])
    cd8 = result["table"].loc["CD8_T"]
    assert cd8.get("NK", 0) / cd8.sum() <= 0.1 and cd8["CD8_T"] / cd8.sum() >= 0.55, result["table"]


def read_pbmc4k() -> ad.AnnData:
    """The vendored pbmc4k counts (uint16 CSR in HDF5, see make_test_data.py) as an AnnData."""
    with h5py.File(DATA / "pbmc4k_soupx_2170cells.h5", "r") as handle:
        parts = {name: handle[name][:] for name in handle}
    counts = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=tuple(parts["shape"]))
    obs = pd.DataFrame(
        {"annotation": parts["annotation"].astype(str), "cluster": parts["cluster"].astype(str)},
        index=parts["barcodes"].astype(str),
    )
    return ad.AnnData(
        X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=parts["genes"].astype(str))
    )


@pytest.mark.slow
def test_pbmc4k_fine_accuracy(tmp_path):
    """10x pbmc4k with the SoupX authors' labels (2,170 cells as two random halves): >= 85% of
    the cells get their fine type (see SOUPX_FINE for how the authors' clusters are counted), at
    least 10 points above the plain alternative, and the cluster that mixes CD4 and CD8 T cells
    is split (CD4 T and CD8 T both >= 85% right)."""
    adata = read_pbmc4k()
    half = np.random.default_rng(0).random(adata.n_obs) < 0.5
    parts = {"h1": adata[half], "h2": adata[~half]}
    sheet = pd.DataFrame({"sample": ["h1", "h2"], "condition": ["a", "b"], "donor": ["x", "y"]})
    ids = np.where(half, "h1_", "h2_") + adata.obs_names.to_numpy()
    truth = pd.Series(adata.obs["cluster"].map(SOUPX_FINE).to_numpy(), index=ids)
    gd_mait = ids[(adata.obs["cluster"] == SOUPX_T_CLUSTER_CALLED_NK).to_numpy()]
    truth[gd_mait] = "NK"
    result = run_and_compare(
        write_project(tmp_path / "pbmc4k", parts, sheet), truth, accept={c: {"CD8_T"} for c in gd_mait}
    )
    assert result["ours"] >= 0.85, (result["ours"], result["table"])
    assert result["ours"] >= result["plain"] + 0.03, (result["ours"], result["plain"])
    table = result["table"]
    for t in ("CD4_T", "CD8_T"):
        assert table.loc[t, t] / table.loc[t].sum() >= 0.85, table
