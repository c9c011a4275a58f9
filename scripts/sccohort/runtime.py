"""Process set-up shared by every rule script: logging, caches, thread caps, atomic writes."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The variables that size the thread pools of BLAS, OpenMP, numba and numexpr.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


# Warnings every run printed once per job and that need nothing from the user: (message regex,
# category), matched on the message alone (anndata's is attributed to functools, not to anndata).
# Anything else still reaches the console and the rule's log.
HARMLESS_WARNINGS = (
    # anndata's ImplicitModificationWarning when a reader builds an AnnData and makes its index str
    ("Transforming to str index", Warning),
    # pandas 2.3 on fillna(False) of an object column (cohort.hvg); the values are already booleans
    ("Downcasting object dtype arrays on .fillna", FutureWarning),
)


def quiet_known_warnings() -> None:
    """Filter HARMLESS_WARNINGS (by message, so a new warning of the same class still shows)."""
    import warnings

    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def configure_environment(threads: int = 1, cache_root: str | os.PathLike | None = None) -> None:
    """Cap BLAS/numba threads at the rule's `threads` and point caches at writable folders.

    Must run before numpy, numba or matplotlib are imported: they read these variables once.
    Cluster nodes often have a read-only or shared home, so the numba, JAX (scib-metrics) and
    matplotlib caches go to a folder the job can write (by default .snakemake/sccohort_cache in
    the working directory, shared by all jobs so numba compiles once per machine, not once per
    job; JAX keeps compilations that took over a second).
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(max(1, int(threads)))
    root = Path(cache_root) if cache_root else Path.cwd() / ".snakemake" / "sccohort_cache"
    caches = (
        ("NUMBA_CACHE_DIR", "numba"),
        ("JAX_COMPILATION_CACHE_DIR", "jax"),
        ("MPLCONFIGDIR", "matplotlib"),
    )
    for name, sub in caches:
        if not os.environ.get(name):
            path = root / sub
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
    os.environ.setdefault("MPLBACKEND", "Agg")
    quiet_known_warnings()


def get_logger(log_path: str | os.PathLike | None = None, name: str = "sccohort") -> logging.Logger:
    """A logger writing to the rule's log file (and stderr), never duplicating handlers."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False
    return logger


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    A killed or failing job therefore never leaves a half-written output under its final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of an earlier attempt at this output that was killed (SIGKILL, node failure)
    # before its finally: ran. Snakemake never runs two jobs for one output at once.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the permissions a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_table(df, path: str | os.PathLike, index: bool = False) -> None:
    """Write a TSV (gzipped when the name ends in .gz) atomically."""
    compression = "gzip" if str(path).endswith(".gz") else None
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=index, compression=compression)


def uns_without_none(value):
    """`value` (uns or a part of it) with every None dropped from its mappings and lists.

    anndata 0.12 writes None, but the anndata of older readers (cellxgene installs, scanpy < 1.10)
    refuses the file; scanpy reads a missing key as None (uns["log1p"] = {} is natural log)."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {k: uns_without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [uns_without_none(v) for v in value if v is not None]
    return value


def read_table(path: str | os.PathLike, *, dtype=None, **options):
    """Read back a TSV the workflow wrote with write_table (gzipped when the name ends in .gz).

    Values come back as written, whatever their text: a sample, condition, donor, cell type or
    gene named NA, None, null or nan stays that text (pandas' default reads those as missing).
    Name columns (names.TEXT_COLUMNS, leiden_<res>, every column with dtype=str) are text, an
    empty field in them is "" ; in the other columns an empty field (how write_table writes a
    missing number) is NaN. `dtype` (a dict) adds to or overrides the text columns; other options
    go to pandas.read_csv (usecols, index_col, ...).
    """
    import pandas as pd

    from .names import TEXT_COLUMNS

    sep = options.pop("sep", "\t")
    header = pd.read_csv(path, sep=sep, nrows=0).columns
    if dtype is str:
        text = set(header)
    else:
        dtype = {
            **{c: str for c in header if c in TEXT_COLUMNS or str(c).startswith("leiden_")},
            **(dtype or {}),
        }
        text = {c for c, kind in dtype.items() if kind is str}
    na_values = {c: [""] for c in header if c not in text}
    return pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=False, na_values=na_values, **options)


def write_h5ad(adata, path: str | os.PathLike) -> None:
    """Write an AnnData atomically (lzf: fast, and a fraction of gzip's write time).

    Writes: adata.uns without None values (uns_without_none)."""
    adata.uns = uns_without_none(adata.uns)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="lzf")


def write_h5ad_update(source, adata, path, keys=("obs", "obsm", "obsp", "uns")) -> None:
    """Write `source` (an .h5ad) to `path` with the elements `keys` taken from `adata`.

    For rules that add cell annotations to a large object: X, layers and var are copied from
    `source` byte for byte and never loaded into memory, so such a job needs memory for its
    obs/obsm/uns only, not for the count matrices. Written atomically, like write_h5ad.
    """
    import shutil

    import h5py
    from anndata.io import write_elem

    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
        with h5py.File(tmp, "r+") as handle:
            for key in keys:
                if key in handle:
                    del handle[key]
                value = getattr(adata, key)
                value = value if key == "obs" else dict(value)
                write_elem(handle, key, uns_without_none(value) if key == "uns" else value)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def package_versions(names=None) -> dict[str, str]:
    """Versions of the packages that shaped a result, for uns and the report."""
    from importlib import metadata

    names = names or (
        "scanpy",
        "anndata",
        "numpy",
        "scipy",
        "pandas",
        "scikit-learn",
        "scrublet",
        "harmonypy",
        "illico",
        "edgepython",
        "pydeseq2",
        "leidenalg",
        "igraph",
        "umap-learn",
        "scikit-misc",
        "scib-metrics",
        "matplotlib",
        "snakemake",
    )
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_rule(main, smk) -> None:
    """Run a rule script's `main(smk, log)` with caches, thread caps and logging set up.

    Errors are written to the rule's log and the job fails (Snakemake then removes its outputs):
    an InputError (bad input or config: the user's to fix) as its message alone (the logger also
    writes to stderr), with exit status 1 and no traceback, since the message names the file and
    what to do;
    anything else (a bug) with its traceback, re-raised.
    """
    configure_environment(smk.threads)
    log = get_logger(smk.log[0] if smk.log else None)
    try:
        main(smk, log)
    except Exception as error:
        from .errors import InputError

        if not isinstance(error, InputError):
            log.exception("rule %s failed", getattr(smk, "rule", "?"))
            raise
        log.error("%s", error)
        raise SystemExit(1) from None
