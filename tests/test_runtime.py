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


def test_known_harmless_warnings_are_filtered_once_and_others_kept(tmp_path):
    """configure_environment (run_rule) silences anndata's str-index warning for every rule script;
    other warnings still show. Run in a subprocess: the filter changes the process's warning state."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import warnings, sys\n"
        "from sccohort.runtime import configure_environment\n"
        f"configure_environment(1, {str(tmp_path)!r})\n"
        "import anndata as ad, numpy as np, pandas as pd\n"
        "ad.AnnData(np.zeros((2, 2)), obs=pd.DataFrame(index=[0, 1]))\n"
        "warnings.warn('something new', UserWarning)\n"
    )
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(scripts)}
    )
    assert result.returncode == 0, result.stderr
    assert "Transforming to str index" not in result.stderr
    assert "something new" in result.stderr


def test_tables_read_back_as_written(tmp_path):
    """write_table / read_table: names pandas reads as missing (NA, None, null, nan) stay text,
    name columns stay text ("01", cluster "0"), an empty number is NaN, an empty name is ""."""
    import numpy as np
    import pandas as pd
    from sccohort.runtime import read_table, write_table

    table = pd.DataFrame(
        {
            "sample": ["NA", "01", "null"],
            "condition": ["None", "nan", ""],
            "leiden_0.5": ["0", "1", "10"],
            "score": [1.5, np.nan, 3.0],
        }
    )
    write_table(table, tmp_path / "t.tsv.gz")
    back = read_table(tmp_path / "t.tsv.gz")
    assert back[["sample", "condition", "leiden_0.5"]].equals(table[["sample", "condition", "leiden_0.5"]])
    assert back["score"].isna().tolist() == [False, True, False]
    assert read_table(tmp_path / "t.tsv.gz", dtype=str)["score"].tolist() == ["1.5", "", "3.0"]
