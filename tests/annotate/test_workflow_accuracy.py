"""Fine-level accuracy of the whole workflow on Kang 2018's paired subset (2 donors x control and
IFN-beta), and the DE stage's real positive from the same run; the shared code and data are
described in workflow_accuracy.py.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from annotate.workflow_accuracy import DATA, KANG_FINE, run_and_compare, write_project

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
