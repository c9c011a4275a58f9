"""Stage packages that import their modules only when an entry function is used.

The Snakefile imports the stage packages whenever the DAG is built (every `snakemake` call, and
every cluster job, which re-reads the Snakefile), for their cheap config and input checks. An
eager ``__init__`` would load scipy.stats, anndata and matplotlib there, ~1.5 s per call; with
:func:`lazy_exports` (PEP 562 module ``__getattr__``) a name is imported from its module on first
use, and ``from sccohort.qc import probe_input`` loads only what ``probe_input`` needs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package` that imports ``sources[name]`` (a submodule name
    relative to the package, e.g. ``".doublets"``) the first time `name` is asked for."""
    namespace = sys.modules[package].__dict__  # the package being initialised

    def __getattr__(name: str) -> Any:
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name], package), name)
        namespace[name] = value  # later lookups are plain attribute reads
        return value

    return __getattr__
