"""The consensus label of each cell when more than one annotation method runs.

Each method labels every cell (the marker method per cell, CellTypist and the reference per
cell). The other methods' vocabularies are translated to the marker table's: each of their
labels becomes the marker label that most of its cells carry (voting.label_correspondence; a
model trained on the marker vocabulary translates to itself). A cell's consensus is the label
most of the methods give it (ties go to the earlier method, the marker method first); a method
whose label is the consensus's parent or child counts as agreeing. Its agreement is the share of
all methods that agree (a method saying Unknown does not); below ``min_agreement`` the consensus
is Unknown.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..names import UNKNOWN
from .voting import label_correspondence


def consensus_labels(
    labels: Mapping[str, pd.Series], *, parents: Mapping[str, str] | None = None, min_agreement: float = 0.6
) -> pd.DataFrame:
    """Per cell: label (the consensus, Unknown below `min_agreement`) and agreement (0-1).

    `labels`: method -> per-cell labels (aligned), the marker method first; `parents`: the
    marker table's type -> parent.
    """
    parents = dict(parents or {})
    names = list(labels)
    base = pd.Series(np.asarray(labels[names[0]], dtype=str))
    translated = {names[0]: base.to_numpy()}
    for name in names[1:]:
        values = pd.Series(np.asarray(labels[name], dtype=str))
        mapping = label_correspondence(base, values)
        translated[name] = np.array(
            [UNKNOWN if v == UNKNOWN else mapping.get(v, v) for v in values], dtype=object
        )
    votes = np.column_stack([translated[n] for n in names]).astype(str)
    names_of, codes = np.unique(votes, return_inverse=True)
    codes = codes.reshape(votes.shape)
    related = np.array([[_related(a, b, parents) for b in names_of] for a in names_of])
    known = votes != UNKNOWN
    # votes for each method's label: the methods giving exactly that label (ties: earlier method)
    same = (codes[:, :, None] == codes[:, None, :]) & known[:, :, None] & known[:, None, :]
    count = same.sum(axis=1) * known
    best = codes[np.arange(len(codes)), count.argmax(axis=1)]
    agreement = related[codes, best[:, None]].sum(axis=1) / votes.shape[1]
    label = np.where(known.any(axis=1) & (agreement >= min_agreement), names_of[best], UNKNOWN)
    agreement = np.where(known.any(axis=1), agreement, 0.0)
    index = labels[names[0]].index if hasattr(labels[names[0]], "index") else None
    return pd.DataFrame({"label": label, "agreement": np.round(agreement, 4)}, index=index)


def _related(value: str, label: str, parents: Mapping[str, str]) -> bool:
    """True when `value` is `label`, one of its ancestors or one of its descendants."""
    if value == UNKNOWN:
        return False
    return value == label or label in _ancestors(value, parents) or value in _ancestors(label, parents)


def _ancestors(node: str, parents: Mapping[str, str]) -> list[str]:
    out = []
    while parents.get(node) and parents[node] not in out:
        node = parents[node]
        out.append(node)
    return out
