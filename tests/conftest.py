"""Fixtures of the suite; the data builders and runners they use live in helpers.py."""

from __future__ import annotations

import os

# One BLAS/OpenMP/numba thread per test process, set before numpy is imported: `make test` runs
# three pytest-xdist workers on two cores beside the workflow runs, and with a thread per core
# each idle OpenBLAS or numba worker thread spins while it waits. The workflow's jobs set their
# own (the rule's `threads`, runtime.configure_environment); this only reaches the tests' own
# computations. sccohort.runtime imports nothing but the standard library.
from sccohort.runtime import THREAD_VARIABLES

for _name in THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import (  # noqa: E402
    make_full_run_project,
    make_pilot_project,
    make_project,
    run_pilot,
    run_workflow,
    shared_run,
    subsample_example,
)


@pytest.fixture(scope="session")
def example_cells():
    """Factory for real cells from the bundled example (see subsample_example)."""
    return subsample_example


@pytest.fixture(scope="session")
def project_factory(tmp_path_factory):
    """Factory: project_factory(name, **make_project kwargs) -> a fresh project directory."""

    def factory(name: str = "project", **kwargs) -> Path:
        return make_project(tmp_path_factory.mktemp(name), **kwargs)

    return factory


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, worker_id) -> Path:
    """One whole-workflow run (rule all, --cores 2) on make_full_run_project, shared (shared_run)."""
    return shared_run(
        "full_run", lambda p: run_workflow(make_full_run_project(p)), tmp_path_factory, worker_id
    )


@pytest.fixture(scope="session")
def pilot_run(tmp_path_factory, worker_id) -> Path:
    """The one-sample pilot with unusual and hostile names, run whole (helpers.run_pilot), shared
    (shared_run); second_snakemake.json in it holds what a second snakemake started in the same
    folder during the run said."""
    return shared_run("pilot_run", lambda p: run_pilot(make_pilot_project(p)), tmp_path_factory, worker_id)


# Modules run first under pytest-xdist (`make test`: -n 3 --dist loadfile, scopes in this order).
# The SLURM runs spend most of their time waiting for the scheduler, and the kill/resume run is
# single-core (it makes full_run first), so the other workers fill the cores meanwhile with the
# modules that make their own workflow runs; the many tests that read full_run come after, when
# it is made, instead of waiting for it.
FIRST_MODULES = (
    "test_slurm.py",
    "test_reliability.py",
    "test_workflow_accuracy.py",
    "test_workflow_accuracy_kang_donors.py",
    "test_workflow_accuracy_pbmc4k.py",
    "test_pilot.py",
    "test_bad_inputs.py",
    "test_deploy.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tell helpers.run_workflow whether this test (and the fixtures it sets up) may run jobs."""
    import helpers

    helpers.RUNNING_SLOW_TEST = item.get_closest_marker("slow") is not None


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return FIRST_MODULES.index(name) if name in FIRST_MODULES else len(FIRST_MODULES)

    items.sort(key=rank)  # stable: the order within and among the other modules is kept
