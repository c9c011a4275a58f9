"""A static UCSC Cell Browser site of the cohort (the `cellbrowser` package: the import that
cbImportScanpy runs, then cbBuild), offline: UMAP, cell types, Leiden clusters with their marker
genes (uns["rank_genes_groups"], cohort_markers' table), sample, condition and per-cell QC, in the
colours of the report (uns["<key>_colors"]).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

# obs columns shown besides the labels, the clusters and the sheet covariates
QC_FIELDS = ("n_genes_by_counts", "total_counts", "pct_counts_mt", "doublet_score")
DATASET = "sccohort"


def meta_fields(obs, *, cluster_key: str, label_columns: Sequence[str]) -> list[str]:
    """The obs columns the browser shows: the labels, the cluster keys, the other categoricals
    (sample, condition, the sheet's covariates), then the QC values present."""
    import pandas as pd

    fields = [c for c in label_columns if c in obs] + [cluster_key]
    fields += [c for c in obs.columns if isinstance(obs[c].dtype, pd.CategoricalDtype) and c not in fields]
    fields += [c for c in QC_FIELDS if c in obs and c not in fields]
    fields += [c for c in obs.columns if c.endswith("_confidence") and c not in fields]
    return fields


def read_for_browser(path: str | Path, *, fields: Sequence[str] | None = None):
    """integrated.h5ad with what the browser needs: X (log-normalised), obs, var, obsm["X_umap"]
    and uns (colours, rank_genes_groups); no layers or graphs."""
    import anndata as ad

    from ..h5ad import read_elem, read_parts

    base = read_parts(path, parts=("obs", "var", "obsm", "uns"))
    adata = ad.AnnData(X=read_elem(path, "X"), obs=base.obs, var=base.var, uns=dict(base.uns))
    adata.obsm["X_umap"] = base.obsm["X_umap"]
    return adata


def build_cellbrowser(
    *,
    integrated_h5ad: str | Path,
    output_dir: str | Path,
    title: str,
    cluster_key: str,
    log: logging.Logger,
) -> None:
    """Import the cohort (cellbrowser.cellbrowser.scanpyToCellbrowser, what cbImportScanpy
    runs) into a scratch folder and build the site (cellbrowser.cellbrowser.build, cbBuild) into
    `output_dir`: index.html plus the dataset's files, to be served by any web server.

    The clusters are `cluster_key` (the clustering of cohort_markers, whose markers the browser
    lists per cluster); cells are coloured by the first label column by default."""
    from cellbrowser import cellbrowser as cb

    adata = read_for_browser(integrated_h5ad)
    if "rank_genes_groups" not in adata.uns:
        raise ValueError(
            f"{integrated_h5ad} has no uns['rank_genes_groups'] (the annotate_cells rule writes it)"
        )
    # the annotation methods' label columns (uns["annotation"]["methods"]: method -> column)
    label_columns = list((adata.uns.get("annotation") or {}).get("methods", {}).values()) or ["cell_type"]
    fields = meta_fields(adata.obs, cluster_key=cluster_key, label_columns=label_columns)
    output_dir = Path(output_dir).resolve()  # cellbrowser resolves relative paths against its conf file
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _cellbrowser_messages(log),
        tempfile.TemporaryDirectory(prefix=".cellbrowser-", dir=output_dir.parent) as scratch,
    ):
        scratch = Path(scratch)
        import_dir, site = scratch / "import", scratch / "site"
        # clusterField=None: the markers are taken from uns["rank_genes_groups"], not recomputed
        cb.scanpyToCellbrowser(
            adata,
            str(import_dir),
            DATASET,
            metaFields=fields,
            clusterField=None,
            coordFields=["X_umap"],
            matrixFormat="mtx",
            nb_marker=int(min(50, len(adata.uns["rank_genes_groups"]["names"]))),
        )
        _override_config(
            import_dir / "cellbrowser.conf", title=title, cluster_key=cluster_key, labels=label_columns
        )
        with _no_marker_databases(cb):
            cb.build([str(import_dir / "cellbrowser.conf")], str(site))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        site.rename(output_dir)
    log.info(
        "Cell Browser site in %s (%d cells, %d genes, fields: %s).",
        output_dir,
        adata.n_obs,
        adata.n_vars,
        ", ".join(fields),
    )


@contextlib.contextmanager
def _cellbrowser_messages(log: logging.Logger):
    """cellbrowser logs to the root logger and stops with sys.exit(1) on an error: its messages go
    to the rule's log too, and its exit becomes an exception that names it."""
    root = logging.getLogger()
    added = [h for h in log.handlers if h not in root.handlers]
    for handler in added:
        root.addHandler(handler)
    try:
        yield
    except SystemExit as stop:
        raise RuntimeError(
            f"cellbrowser stopped (exit {stop.code}); its last ERROR message above says why"
        ) from None
    finally:
        for handler in added:
            root.removeHandler(handler)


@contextlib.contextmanager
def _no_marker_databases(cb):
    """cbBuild copies the public marker-gene databases (CellMarker, PanglaoDB, ...) into the site,
    downloading them from UCSC when they are not on the local disk: the workflow runs offline, so
    the site is built without them (the browser then offers no database look-up)."""
    saved = cb.MARKER_DB_FILES
    cb.MARKER_DB_FILES = []
    try:
        yield
    finally:
        cb.MARKER_DB_FILES = saved


def _override_config(path: Path, *, title: str, cluster_key: str, labels: Sequence[str]) -> None:
    """Append settings to the generated cellbrowser.conf (a Python file: the last assignment wins):
    the title; cells coloured by cell type (the browser colours by clusterField), labelled by the
    clusters of cohort_markers (labelField: a click on a label lists that cluster's markers)."""
    default_colour = labels[0] if labels else cluster_key
    lines = [
        "",
        "# sccohort: coloured by cell type, labelled by the clusters of cohort_markers",
        f"shortLabel = {title!r}",
        f"clusterField = {default_colour!r}",
        f"defColorField = {default_colour!r}",
        f"labelField = {cluster_key!r}",
    ]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
