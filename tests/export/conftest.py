"""Fixtures of the export tests: the CELLxGENE validator's own venv (make cellxgene-venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CXG_VENV = REPO / ".venv-cellxgene"


@pytest.fixture(scope="session")
def cellxgene_venv() -> Path:
    """The bin/ folder of .venv-cellxgene (cellxgene-schema 7.1.2, requirements-cellxgene.lock).
    `make test` builds it; elsewhere the tests that need it are skipped, in CI they fail."""
    bin_dir = CXG_VENV / "bin"
    if not (bin_dir / "cellxgene-schema").is_file():
        message = f"{bin_dir / 'cellxgene-schema'} missing: run `make cellxgene-venv`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


def offline_prefix() -> list[str]:
    """A command prefix that runs a program without network (a new network namespace), where the
    machine allows it (root, util-linux's unshare); else nothing."""
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    ):
        return ["unshare", "-n"]
    return []
