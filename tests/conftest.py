"""Fixtures of the suite; the data builders and runners they use live in helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import (
    make_full_run_project,
    make_pilot_project,
    make_project,
    run_pilot,
    run_workflow,
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


def shared_run(name: str, build, tmp_path_factory, worker_id) -> Path:
    """The project folder `build(folder)` makes, made once per test session and shared by the
    tests that read it, also across pytest-xdist workers: the first worker that needs it builds
    it under a file lock, the others wait for it and read the same folder."""
    if worker_id == "master":  # no xdist
        project = tmp_path_factory.mktemp(name)
        build(project)
        return project
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # one folder for all workers of this session
    project, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    with FileLock(str(shared / f"{name}.lock")):
        if failed.exists():  # do not run (and fail) it a second time on another worker
            raise AssertionError(f"{name} failed on another worker:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(project, ignore_errors=True)
            try:
                build(project)
            except AssertionError as error:
                failed.write_text(str(error))
                raise
            done.touch()
    return project


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
    "test_pilot.py",
    "test_bad_inputs.py",
    "test_deploy.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tell helpers.run_workflow whether this test (and the fixtures it sets up) may run jobs."""
    import helpers

    helpers.RUNNING_SLOW_TEST = item.get_closest_marker("slow") is not None


# Folders whose modules share costly session fixtures of their conftest.py (tests/cohort: the
# integrated and clustered planted cohort, ~50 s): under pytest-xdist they go to one worker
# together, so the fixtures are made once; every other module is a unit of its own
# (`--dist loadgroup` with one xdist_group per module: pyproject.toml).
SHARED_FIXTURE_FOLDERS = ("cohort",)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return FIRST_MODULES.index(name) if name in FIRST_MODULES else len(FIRST_MODULES)

    items.sort(key=rank)  # stable: the order within and among the other modules is kept
    root = Path(str(config.rootpath))
    for item in items:
        folder = item.path.parent.name
        unit = item.path.parent if folder in SHARED_FIXTURE_FOLDERS else item.path
        item.add_marker(pytest.mark.xdist_group(str(unit.relative_to(root))))
