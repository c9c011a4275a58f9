"""Cell-type composition per sample and per condition (composition.tsv,
composition_by_condition.tsv)."""

from __future__ import annotations

import numpy as np
import pandas as pd

PER_CONDITION_COLUMNS = [
    "condition",
    "cell_type",
    "n_samples",
    "n_cells",
    "fraction_pooled",
    "mean_sample_fraction",
    "sd_sample_fraction",
]


def composition(
    obs: pd.DataFrame,
    *,
    label_key: str = "cell_type",
    sample_key: str = "sample",
    condition_key: str = "condition",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cells per sample x cell type (long table with the sample's condition and fractions) and the
    per-condition summary (pooled fraction and mean / SD of the per-sample fractions).

    Cell types in the label column's category order (sorted when not categorical), samples in
    theirs (first appearance when not categorical); without `condition_key` every sample is in
    condition "all".
    """
    labels = obs[label_key].astype(str)
    order = (
        [str(c) for c in obs[label_key].cat.categories]
        if isinstance(obs[label_key].dtype, pd.CategoricalDtype)
        else sorted(labels.unique())
    )
    samples = obs[sample_key].astype(str)
    sample_order = (
        [str(s) for s in obs[sample_key].cat.categories if (samples == str(s)).any()]
        if isinstance(obs[sample_key].dtype, pd.CategoricalDtype)
        else list(pd.unique(samples))
    )
    counts = pd.crosstab(samples, labels).reindex(index=sample_order, columns=order, fill_value=0)
    condition_of = (
        obs.assign(_s=samples)[["_s", condition_key]]
        .drop_duplicates("_s")
        .set_index("_s")[condition_key]
        .astype(str)
        if condition_key in obs
        else pd.Series("all", index=sample_order)
    )
    fractions = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    per_sample = _per_sample(counts, fractions, condition_of)
    per_condition = _per_condition(counts, fractions, condition_of.reindex(sample_order))
    return per_sample, per_condition


def _per_sample(counts: pd.DataFrame, fractions: pd.DataFrame, condition_of: pd.Series) -> pd.DataFrame:
    """Long table: sample, condition, cell_type, n_cells, fraction (6 digits), n_cells_sample."""
    per_sample = counts.stack().rename("n_cells").reset_index()
    per_sample.columns = ["sample", "cell_type", "n_cells"]
    per_sample["fraction"] = fractions.stack().to_numpy().round(6)
    per_sample.insert(1, "condition", per_sample["sample"].map(condition_of).to_numpy())
    per_sample["n_cells_sample"] = per_sample["sample"].map(counts.sum(axis=1)).astype(int).to_numpy()
    return per_sample


def _per_condition(counts: pd.DataFrame, fractions: pd.DataFrame, condition_of: pd.Series) -> pd.DataFrame:
    """Per condition (in order of first sample) and cell type: samples, pooled cells and fraction,
    mean and SD (ddof 1; NaN with one sample) of the samples' fractions, rounded to 6 digits."""
    rows = []
    for condition in pd.unique(condition_of):
        members = [s for s in condition_of.index if condition_of[s] == condition]
        pooled = counts.loc[members].sum(axis=0)
        for cell_type in counts.columns:
            sample_fractions = fractions.loc[members, cell_type]
            rows.append(
                (
                    condition,
                    cell_type,
                    len(members),
                    int(pooled[cell_type]),
                    round(float(pooled[cell_type] / max(pooled.sum(), 1)), 6),
                    round(float(sample_fractions.mean()), 6),
                    round(float(sample_fractions.std(ddof=1)), 6) if len(members) > 1 else float("nan"),
                )
            )
    return pd.DataFrame(rows, columns=PER_CONDITION_COLUMNS)
