"""Fixtures of the suite; the data builders and runners they use live in helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import make_full_run_project, make_project, run_workflow, subsample_example


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
    """One whole-workflow run (rule all, --cores 2) on make_full_run_project, shared by the tests
    that read it, also across pytest-xdist workers: the first worker that needs it runs it under a
    file lock, the others wait for it and read the same folder."""
    if worker_id == "master":  # no xdist
        project = make_full_run_project(tmp_path_factory.mktemp("full_run"))
        run_workflow(project)
        return project
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # one folder for all workers of this session
    project, done, failed = shared / "full_run", shared / "full_run.done", shared / "full_run.failed"
    with FileLock(str(shared / "full_run.lock")):
        if failed.exists():  # do not run (and fail) it a second time on another worker
            raise AssertionError(f"full_run failed on another worker:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(project, ignore_errors=True)
            try:
                run_workflow(make_full_run_project(project))
            except AssertionError as error:
                failed.write_text(str(error))
                raise
            done.touch()
    return project


# Modules run first under pytest-xdist (`make test`: -n 2 --dist loadfile, scopes in this order):
# the SLURM runs spend most of their time waiting for the scheduler and the kill/resume run is
# single-core, so other tests fill the second core while they run; they ask for full_run last.
FIRST_MODULES = ("test_slurm.py", "test_reliability.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return FIRST_MODULES.index(name) if name in FIRST_MODULES else len(FIRST_MODULES)

    items.sort(key=rank)  # stable: the order within and among the other modules is kept
