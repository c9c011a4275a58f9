"""Shared names: file-safe names stay usable as file names whatever the label."""

from __future__ import annotations

from sccohort.names import SAFE_NAME_LENGTH, safe_name, safe_names


def test_long_and_non_ascii_labels_give_short_distinct_file_names():
    long = "T cells " * 60  # a 480-character label: no file system takes it as a name
    assert len(safe_name(long)) <= SAFE_NAME_LENGTH and safe_name(long).startswith("T_cells_T_cells")
    mapping = safe_names([long, long + "x", "γδ T", "αβ T"])
    assert len(set(mapping.values())) == 4
    assert all(len(name.encode()) <= SAFE_NAME_LENGTH + 3 for name in mapping.values())
