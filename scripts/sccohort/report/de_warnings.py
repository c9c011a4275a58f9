"""Caveats of one tested DE group, shown beside it (and in the run summary's warnings).

- Few residual degrees of freedom: pseudobulk samples minus the design's coefficients. Below 3,
  each gene's variance (voom's, edgeR's or DESeq2's dispersion) rests on one or two samples'
  worth of information, whatever the test (PyDESeq2 says so only in the job's log); 2 vs 2
  samples with ``~ condition`` leaves 2.
- Genes of ambient RNA or of cells stuck to the tested ones among the calls: platelet genes
  (PF4, PPBP, ...) "up" in B or T cells, haemoglobin genes, or the S100A8/S100A9 alarmins of
  monocytes and neutrophils; they usually mean contamination that differs between samples, not
  the group's biology. A group of that very type (platelets, erythrocytes, myeloid cells) is not
  flagged for its own genes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd

MIN_RESIDUAL_DF = 3
# source: (its genes, a pattern of group names that are that source themselves)
CONTAMINATION_GENES = {
    "platelets": (("PF4", "PPBP", "GP9", "ITGA2B", "TUBB1", "GNG11", "CLU"), r"platelet|megakaryo"),
    "erythrocytes (haemoglobin)": (("HBB", "HBA1", "HBA2", "HBD", "HBM"), r"eryth|rbc"),
    "monocytes / neutrophils (S100A8/9)": (
        ("S100A8", "S100A9", "S100A12", "LYZ"),
        r"mono|neutro|myeloid|granulo|dc\b|macro",
    ),
}


def design_terms(design: str) -> list[str]:
    """The variables of a design formula ("~ donor + condition" -> ["donor", "condition"])."""
    return [t.strip() for t in design.replace("~", "").split("+") if t.strip() and t.strip() != "1"]


def residual_df(metadata: pd.DataFrame, design: str) -> int | None:
    """Pseudobulk samples minus coefficients (intercept + levels - 1 of each categorical design
    variable among these samples); None when a design variable is not in `metadata`."""
    terms = design_terms(design)
    if any(t not in metadata for t in terms):
        return None
    n_coefficients = 1 + sum(max(metadata[t].astype(str).nunique() - 1, 0) for t in terms)
    return len(metadata) - n_coefficients


def contamination_calls(table: pd.DataFrame, group: str, alpha: float) -> dict[str, list[str]]:
    """{source: called genes} for the contamination genes among `table`'s calls (padj < alpha)."""
    padj = pd.to_numeric(table["padj"], errors="coerce")
    called = table.loc[padj < alpha]
    direction = dict(zip(called["gene"].astype(str), called["log2FoldChange"], strict=True))
    found = {}
    for source, (genes, own) in CONTAMINATION_GENES.items():
        if re.search(own, group, flags=re.IGNORECASE):
            continue
        hits = [f"{g} {'up' if direction[g] > 0 else 'down'}" for g in genes if g in direction]
        if hits:
            found[source] = hits
    return found


def group_warnings(
    *,
    contrast: str,
    group: str,
    table: pd.DataFrame,
    metadata: pd.DataFrame | None,
    samples: Sequence[str],
    design: str,
    alpha: float,
) -> list[str]:
    """The caveats of one tested group (`samples`: its pseudobulk samples' sample ids;
    `metadata`: results/de/pseudobulk/metadata.tsv rows of this group)."""
    messages = []
    if metadata is not None and len(metadata):
        used = metadata[metadata["sample"].astype(str).isin(samples)] if samples else metadata
        df = residual_df(used, design)
        if df is not None and df < MIN_RESIDUAL_DF:
            messages.append(
                f"DE {contrast} / {group}: {len(used)} pseudobulk samples for design {design} leave {df} residual "
                f"degrees of freedom (fewer than {MIN_RESIDUAL_DF}): each gene's variance is estimated from almost "
                "no replication, whatever the test; read the calls as exploratory and add samples where you can."
            )
    for source, hits in contamination_calls(table, group, alpha).items():
        messages.append(
            f"DE {contrast} / {group}: {', '.join(hits)} among the calls: genes of {source}, typical of "
            "ambient RNA or of cells stuck to this group, not of its own biology; check for contamination "
            "(e.g. SoupX, CellBender) or doublets before reading them."
        )
    return messages


def group_metadata(metadata: pd.DataFrame | None, group_file: str) -> pd.DataFrame | None:
    """The pseudobulk samples of one group (by its group_file) in metadata.tsv."""
    if metadata is None or "group_file" not in metadata:
        return None
    return metadata[metadata["group_file"].astype(str) == str(group_file)]


def split_samples(row: Mapping) -> list[str]:
    """The sample ids of a DE summary row's samples_test and samples_reference."""
    return [
        s
        for column in ("samples_test", "samples_reference")
        for s in str(row.get(column, "") or "").split(",")
        if s
    ]
