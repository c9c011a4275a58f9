"""Stage packages load their modules on first use (sccohort.lazy): the checks the Snakefile calls
when the DAG is built (every `snakemake` call, every cluster job) must not load scanpy, anndata,
scipy.stats or matplotlib, ~1.5 s per call."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from helpers import REPO

STAGES = ("qc", "cohort", "annotate", "de", "report", "export")
HEAVY = ("scanpy", "anndata", "scipy.stats", "matplotlib", "umap", "jax")


def test_building_the_dag_loads_no_heavy_module():
    # what workflow/rules/*.smk import and call at DAG time
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "from sccohort import sheet, config_checks, config_schema, qc, annotate, export, de, cohort\n"
        "from sccohort.qc import probe_input, inspect_input\n"
        "annotate.check_annotation_config, export.check_export_config, de.check_de_config\n"
        "cohort.DEFAULTS, cohort.gene_codes\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == [], f"loaded when the DAG is built: {loaded.stdout}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_exported_name_resolves_to_its_module(stage):
    package = importlib.import_module(f"sccohort.{stage}")
    assert package.__all__
    for name in package.__all__:
        value = getattr(package, name)
        assert getattr(value, "__name__", name) == name or not callable(value), (stage, name)
    with pytest.raises(AttributeError, match="no attribute 'not_an_entry'"):
        package.not_an_entry  # noqa: B018
