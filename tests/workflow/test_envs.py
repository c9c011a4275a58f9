"""Deployment checks that need no network: conda envs vs the lock, rule declarations, config docs.

No conda channel is reachable where these tests run, so the envs are checked statically:
every pin equals requirements.lock (which equals the venv the other tests run in), every
rule points at an existing env, and each env lists every package its rules' scripts import.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

from workflow_rules import load_rules  # noqa: E402


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_envs = _load_tool("gen_envs")
gen_config_doc = _load_tool("gen_config_doc")
CONDA_TO_PIP = {conda: pip for pip, conda in gen_envs.PIP_TO_CONDA.items()}
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return gen_envs.read_lock(REPO / "requirements.lock")


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def _env_pins(path: Path) -> tuple[list[str], dict[str, str]]:
    """(channels, {conda name: spec}) of a conda env file."""
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # {"pip": ["name==version", ...]}: only PyPI-only packages
            assert set(dep) == {"pip"}, f"{path.name}: unexpected dependency entry {dep!r}"
            for requirement in dep["pip"]:
                name, _, version = requirement.partition("==")
                assert name in gen_envs.PIP_ONLY, (
                    f"{path.name}: {name} comes from pip but has a conda package"
                )
                pins[name] = f"=={version}"
            continue
        name, _, spec = dep.partition(" ")
        if name == "pip" and not spec:  # conda's pip, to install the pip: section
            continue
        pins[name] = spec.strip()
    return env["channels"], pins


# ---------------------------------------------------------------------------- lock and envs


def test_lock_is_exact_and_matches_the_venv(lock):
    """requirements.lock pins every installed distribution, at the installed version."""
    installed = {
        gen_envs.canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if gen_envs.canonical(dist.metadata["Name"]) not in {"pip", "setuptools", "wheel"}
    }
    differ = {
        name: (lock.get(name), version) for name, version in installed.items() if lock.get(name) != version
    }
    assert not differ, (
        f"venv and requirements.lock differ (lock, installed): {differ}; run tools/gen_envs.py --lock"
    )


def test_requirements_in_pins_agree_with_the_lock(lock):
    for line in (REPO / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        name = gen_envs.canonical(name.strip())
        assert name in lock, f"requirements.in lists {name}, which requirements.lock lacks"
        if version:
            assert lock[name] == version.strip(), f"{name}: requirements.in {version}, lock {lock[name]}"


def test_one_env_per_rule_group_and_no_strays():
    assert {p.stem for p in ENV_FILES} == set(gen_envs.GROUPS)
    assert {"qc", "cohort", "annotation", "de", "report", "multiqc"} <= set(gen_envs.GROUPS)


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.stem)
def test_env_pins_equal_the_lock(env_file, lock):
    channels, pins = _env_pins(env_file)
    assert channels == ["conda-forge", "bioconda", "nodefaults"]
    assert pins.pop("python") == f"={sys.version_info.major}.{sys.version_info.minor}"
    assert "snakemake" not in pins, "rule envs do not need snakemake"
    assert len(pins) >= 2
    for conda_name, spec in pins.items():
        assert spec.startswith("=="), f"{env_file.name}: {conda_name} {spec!r} is not an exact pin"
        pip_name = CONDA_TO_PIP.get(conda_name, conda_name)
        assert pip_name in lock, f"{env_file.name}: {conda_name} is not in requirements.lock"
        assert spec[2:] == lock[pip_name], (
            f"{env_file.name}: {conda_name} {spec[2:]} but requirements.lock has {lock[pip_name]}; "
            "run python tools/gen_envs.py"
        )


def test_envs_are_what_the_generator_writes(lock):
    for group in gen_envs.GROUPS:
        assert (REPO / "envs" / f"{group}.yaml").read_text() == gen_envs.render(group, lock), (
            f"envs/{group}.yaml was edited by hand or is stale; run python tools/gen_envs.py"
        )


def test_lock_parser_rejects_loose_pins(tmp_path):
    bad = tmp_path / "lock"
    bad.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        gen_envs.read_lock(bad)


# ---------------------------------------------------------------------------- rules vs envs


def test_every_job_rule_has_an_existing_generated_env(rules):
    job_rules = [r for r in rules if not r.norun]
    assert job_rules
    for rule in job_rules:
        assert rule.conda_env is not None, f"rule {rule.name} ({rule.snakefile.name}) has no conda: directive"
        assert rule.conda_env.is_file(), f"rule {rule.name}: conda env {rule.conda_env} does not exist"
        assert rule.conda_env.parent == REPO / "envs" and rule.conda_env.stem in gen_envs.GROUPS, (
            f"rule {rule.name}: {rule.conda_env} is not one of the generated envs/<group>.yaml"
        )


PACKAGE_ROOT = REPO / "scripts"


def _module_name(path: Path) -> str | None:
    """Dotted name of a file of the sccohort package (sccohort.qc.load), None for a rule script."""
    try:
        parts = list(path.relative_to(PACKAGE_ROOT / "sccohort").with_suffix("").parts)
    except ValueError:
        return None
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(["sccohort", *parts])


def _module_file(name: str) -> Path | None:
    """The file of a sccohort module or package (sccohort.qc -> sccohort/qc/__init__.py)."""
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level third-party-or-stdlib module names, sccohort modules by dotted name) imported by a
    file; relative imports are resolved against the file's own package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _module_name(path)
    package = own if own is not None and path.name == "__init__.py" else (own or "").rpartition(".")[0]
    modules, local = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (local if alias.name.split(".")[0] == "sccohort" else modules).add(
                    alias.name if alias.name.startswith("sccohort") else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..names import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                absolute = ".".join(base + ([node.module] if node.module else []))
            else:
                absolute = node.module or ""
            if absolute.split(".")[0] != "sccohort":
                modules.add(absolute.split(".")[0])
                continue
            local.add(absolute)
            local.update(f"{absolute}.{alias.name}" for alias in node.names)  # submodules, if any
        elif _is_lazy_sources(node):  # a stage package's lazy exports (sccohort.lazy): its modules
            local.update(package + value.value for value in node.value.values)
    return modules, local


def _is_lazy_sources(node: ast.AST) -> bool:
    """`_SOURCES = {"name": ".module", ...}` of a stage package's __init__ (sccohort.lazy)."""
    return (
        isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["_SOURCES"]
        and isinstance(node.value, ast.Dict)
        and all(isinstance(v, ast.Constant) and str(v.value).startswith(".") for v in node.value.values)
    )


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def script_distributions(script: Path) -> set[str]:
    """Distributions (canonical pip names) a rule script needs, following sccohort imports."""
    seen, todo, modules = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        found, local = _imports(path)
        modules |= found
        for name in local:  # a package's modules import its __init__ (and its parents') too
            parts = name.split(".")
            todo += [f for i in range(1, len(parts) + 1) if (f := _module_file(".".join(parts[:i])))]
    providers = _providers()
    dists = set()
    for module in modules - set(sys.stdlib_module_names) - {"snakemake", "sccohort", "__future__"}:
        for dist in providers.get(module, []):  # not installed: an optional import, nothing to pin
            dists.add(gen_envs.canonical(dist))
    return dists


def test_each_env_holds_what_its_rules_scripts_import(rules):
    missing = {}
    for rule in rules:
        if rule.script is None or rule.conda_env is None or rule.script.suffix != ".py":
            continue
        listed = {gen_envs.canonical(p) for p in gen_envs.GROUPS.get(rule.conda_env.stem, [])}
        lacking = script_distributions(rule.script) - listed
        if lacking:
            missing[f"{rule.name} ({rule.conda_env.name})"] = sorted(lacking)
    assert not missing, (
        f"scripts import packages their env does not list (add to tools/gen_envs.py GROUPS): {missing}"
    )


def test_import_scan_finds_sccohort_dependencies(tmp_path):
    """The scan follows sccohort imports: a script importing only sccohort.runtime + anndata needs anndata."""
    script = tmp_path / "rule.py"
    script.write_text("from sccohort.runtime import run_rule\nimport anndata as ad\nimport json\n")
    found = script_distributions(script)
    assert "anndata" in found and "json" not in found
    scanned = tmp_path / "scanpy_user.py"
    scanned.write_text("def f():\n    import scanpy as sc\n    from scipy import sparse\n")
    assert {"scanpy", "scipy"} <= script_distributions(scanned)
    # into the stage packages and their relative imports: sccohort.de pulls in pydeseq2
    stage = tmp_path / "de_rule.py"
    stage.write_text("def main():\n    from sccohort.de import de_contrast\n")
    assert "pydeseq2" in script_distributions(stage)


# ---------------------------------------------------------------------------- resources


def _call_resource(value, attempt: int):
    """Evaluate a resource callable the way Snakemake does, for a job with no (existing) input."""
    from snakemake.iocontainers import InputFiles, Wildcards

    available = {"wildcards": Wildcards(), "input": InputFiles(), "threads": 1, "attempt": attempt}
    params = inspect.signature(value).parameters
    return value(**{name: available[name] for name in params if name in available})


def test_every_job_rule_declares_threads_mem_and_runtime_scaled_by_attempt(rules):
    problems = []
    for rule in rules:
        if rule.norun:
            continue
        if rule.threads is None:
            problems.append(f"{rule.name}: no threads:")
        for resource in ("mem_mb", "runtime"):
            value = rule.resources.get(resource)
            if value is None:
                problems.append(f"{rule.name}: no {resource} in resources:")
                continue
            if not callable(value) or "attempt" not in inspect.signature(value).parameters:
                problems.append(
                    f"{rule.name}: {resource} is not derived from attempt (use the common.smk helpers)"
                )
                continue
            try:
                first, second = _call_resource(value, 1), _call_resource(value, 2)
            except (AttributeError, KeyError, IndexError, TypeError):  # needs named inputs; signature checked
                continue
            if not (isinstance(first, int | float) and first > 0 and second > first):
                problems.append(f"{rule.name}: {resource} is {first} on attempt 1 and {second} on attempt 2")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- config docs


def test_config_readme_is_generated_from_the_schemas():
    assert (REPO / "config" / "README.md").read_text() == gen_config_doc.render(), (
        "config/README.md is stale: run python tools/gen_config_doc.py"
    )


def _properties(schema: dict, prefix: str = ""):
    for name, prop in schema.get("properties", {}).items():
        yield f"{prefix}{name}", prop
        yield from _properties(prop, f"{prefix}{name}.")
        if isinstance(prop.get("items"), dict):
            yield from _properties(prop["items"], f"{prefix}{name}[].")


@pytest.mark.parametrize("schema_name", ["config.schema.yaml", "samples.schema.yaml"])
def test_every_schema_property_has_description_and_default(schema_name):
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / schema_name).read_text())
    props = list(_properties(schema))
    assert len(props) > 5
    undocumented = [key for key, prop in props if not str(prop.get("description", "")).strip()]
    no_default = [key for key, prop in props if "default" not in prop]
    assert not undocumented, f"{schema_name}: properties without description: {undocumented}"
    assert not no_default, f"{schema_name}: properties without default: {no_default}"


def test_config_readme_documents_every_option_and_sheet_column():
    text = (REPO / "config" / "README.md").read_text()
    for schema_name in ("config.schema.yaml", "samples.schema.yaml"):
        schema = yaml.safe_load((REPO / "workflow" / "schemas" / schema_name).read_text())
        for key, _prop in _properties(schema):
            assert f"`{key}`" in text, f"config/README.md does not document {key}"


def test_config_yaml_options_all_exist_in_the_schema():
    """config/config.yaml sets nothing the schema (and so the README) does not know."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    properties = dict(_properties(schema))
    known = set(properties)
    # free-form mappings (label -> id, e.g. export.cell_type_ontology): their keys are data
    free_form = {
        key for key, prop in properties.items() if isinstance(prop.get("additionalProperties"), dict)
    }
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

    def keys(node, prefix=""):
        for name, value in node.items():
            yield f"{prefix}{name}"
            if isinstance(value, dict) and f"{prefix}{name}" not in free_form:
                yield from keys(value, f"{prefix}{name}.")

    unknown = [key for key in keys(config) if key not in known]
    assert not unknown, f"config/config.yaml options missing from the schema: {unknown}"


# ---------------------------------------------------------------------------- profiles, catalog


def test_profiles_parse_and_hold_the_required_settings():
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    assert default["keep-going"] is False and default["rerun-incomplete"] is True and default["cores"]
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    assert slurm["retries"] >= 1 and slurm["jobs"] >= 1 and slurm["latency-wait"] >= 5
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(slurm["default-resources"])
    # squeue works without accounting; MinJobAge must cover 3 x the first status-check delay
    assert slurm["slurm-status-command"] == "squeue"
    assert 3 * slurm["slurm-init-seconds-before-status-checks"] <= 120
    assert "cores" not in slurm, "cores would cap every SLURM job's threads at the login node's cores"


def test_slurm_profile_options_exist_in_this_snakemake():
    """Every key is a real command-line option of the installed snakemake + slurm plugin."""
    from snakemake.cli import get_argument_parser

    options = {opt for action in get_argument_parser()._actions for opt in action.option_strings}
    for profile in ("default", "slurm"):
        for key in yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text()):
            assert f"--{key}" in options, f"profiles/{profile}: {key} is not a snakemake option"


def test_workflow_catalog_file():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert usage["mandatory-flags"]["flags"]
    assert re.search(r"snakemake", usage["mandatory-flags"]["desc"])


# ---------------------------------------------------------------------------- thread caps, caches

_NUMERIC = {"numpy", "scipy", "pandas", "anndata", "scanpy", "numba", "matplotlib", "sklearn", "h5py"}


def test_rule_scripts_set_up_the_process_before_importing_numerics(rules):
    """BLAS/numba read their thread counts once, at import: a rule script must call run_rule (or
    configure_environment) before anything imports them, so nothing numeric at module level."""
    problems = []
    for script in sorted({r.script for r in rules if r.script is not None and r.script.suffix == ".py"}):
        tree = ast.parse(script.read_text())
        top_imports = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top_imports |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top_imports.add(node.module.split(".")[0])
        calls = {
            node.func.id
            for node in tree.body
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            for node in [node.value]
            if isinstance(node.func, ast.Name)
        }
        if top_imports & _NUMERIC:
            problems.append(f"{script.name}: imports {sorted(top_imports & _NUMERIC)} at module level")
        if not calls & {"run_rule", "configure_environment"}:
            problems.append(
                f"{script.name}: does not call run_rule()/configure_environment() at module level"
            )
    tree = ast.parse((REPO / "scripts" / "sccohort" / "runtime.py").read_text())
    module_level = {
        alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    assert not module_level & _NUMERIC, f"sccohort/runtime.py imports {module_level & _NUMERIC} at import"
    assert not problems, "\n".join(problems)


def test_configure_environment_caps_threads_and_makes_caches_writable(tmp_path):
    """In a fresh process: BLAS and numba use the rule's threads; the numba, JAX and matplotlib
    caches are writable folders (JAX reads its folder from the environment)."""
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        "from sccohort.runtime import configure_environment\n"
        "configure_environment(1)\n"
        "import numpy, numba, threadpoolctl, matplotlib, jax\n"
        "blas = {i['internal_api']: i['num_threads'] for i in threadpoolctl.threadpool_info()}\n"
        "print(numba.config.NUMBA_NUM_THREADS, sorted(set(blas.values())), os.environ['NUMBA_CACHE_DIR'],"
        " matplotlib.get_configdir(), jax.config.jax_compilation_cache_dir, matplotlib.get_backend())\n"
    )
    caches = ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "MPLBACKEND", "JAX_COMPILATION_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in caches}
    env["HOME"] = "/nonexistent"  # a home directory nothing can be written to
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "1" and out[1] == "[1]", out  # 1 < cores: the cap, not the machine, decides
    for folder in out[2:5]:
        assert Path(folder).is_dir() and Path(folder).is_relative_to(tmp_path), folder
    assert out[5].lower() == "agg"
