"""The cell-type tree of a marker table: lineages, the subtypes within them and each node's markers.

The nodes are the table's cell types and its parent labels. A node's parent is its ``parent``
entry; nodes without one hang from the root (the lineages, e.g. ``T_NK``, ``B``, ``Mono``). A
node's own rows are its markers against its siblings: at the root against every other lineage,
below it against the other subtypes of the same parent (``CD4_T`` vs ``CD8_T`` among T cells). A
parent without rows of its own (a bare label such as ``Mono``) competes with the best of its
children's scores. A gene listed with the same sign for every child of a parent is a marker of
the parent (it counts against other lineages, not between the children).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .marker_table import parents_of

ROOT = ""


@dataclass(frozen=True)
class MarkerTree:
    """parent: node -> parent (ROOT for a lineage); children: node -> its children in table order
    (ROOT -> the lineages); rows: node -> its own marker rows (empty for a bare parent label)."""

    parent: dict[str, str]
    children: dict[str, tuple[str, ...]]
    rows: dict[str, pd.DataFrame]

    def path(self, node: str) -> list[str]:
        """The nodes from the lineage down to `node` (both included)."""
        out = [node]
        while self.parent.get(out[0], ROOT):
            out.insert(0, self.parent[out[0]])
        return out

    def lineage(self, node: str) -> str:
        return self.path(node)[0]

    def descendants(self, node: str) -> list[str]:
        """`node` and every node below it."""
        out, stack = [], [node]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(self.children.get(current, ()))
        return out

    def is_leaf(self, node: str) -> bool:
        return not self.children.get(node)

    def shared_genes(self, node: str) -> set[str]:
        """Genes every child of `node` lists with the same sign (only when every child has rows):
        markers of `node` itself, not evidence between its children."""
        kids = self.children.get(node, ())
        if len(kids) < 2 or any(self.rows[k].empty for k in kids):
            return set()
        signed = [set(zip(self.rows[k]["gene"], self.rows[k]["weight"] > 0, strict=True)) for k in kids]
        return {gene for gene, _ in set.intersection(*signed)}


def marker_tree(markers: pd.DataFrame) -> MarkerTree:
    """The tree of a checked marker table (read_marker_table: parents are consistent, no cycle)."""
    parents = parents_of(markers)
    order = list(dict.fromkeys(markers["cell_type"]))
    for node in list(parents.values()):
        if node not in order:
            order.append(node)
    parent = {node: parents.get(node, ROOT) for node in order}
    children: dict[str, list[str]] = {}
    for node in order:
        children.setdefault(parent[node], []).append(node)
    empty = markers.iloc[:0]
    rows = {node: markers.loc[markers["cell_type"] == node].reset_index(drop=True) for node in order}
    rows = {node: (table if len(table) else empty) for node, table in rows.items()}
    return MarkerTree(parent=parent, children={k: tuple(v) for k, v in children.items()}, rows=rows)
