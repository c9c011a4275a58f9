"""runtime: atomic outputs (moved here from the QC tests, where it lived before the package split)."""

from __future__ import annotations

import pytest


def test_atomic_outputs_get_normal_permissions_and_no_partial_file(tmp_path):
    import os

    from sccohort.runtime import atomic_path

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "failed.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    finally:
        os.umask(umask)
