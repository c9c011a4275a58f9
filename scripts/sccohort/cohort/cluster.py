"""kNN graphs and Leiden clustering: the integrated graph (Harmony PCs, or the PCs without
integration) with its UMAP and clusters, and the graph and UMAP of the uncorrected PCs that the
diagnostics compare it with."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from ..errors import InputError
from ..names import format_resolution, leiden_key
from .embed import run_harmony, run_umap
from .options import cohort_params

LOG = logging.getLogger("sccohort")

# Where the uncorrected graph and UMAP are stored (the integrated ones take scanpy's defaults).
UNCORRECTED_NEIGHBORS = "neighbors_uncorrected"
UNCORRECTED_UMAP = "X_umap_pca"


def build_graph(
    adata, *, use_rep: str, n_neighbors: int = 15, seed: int = 0, key_added: str | None = None
) -> None:
    """kNN graph (scanpy neighbours: pynndescent/umap connectivities) on obsm[use_rep].

    Writes: obsp["distances"] and obsp["connectivities"] and uns["neighbors"], or with `key_added`
    obsp[f"{key_added}_distances"], obsp[f"{key_added}_connectivities"] and uns[key_added].
    """
    import scanpy as sc

    k = int(min(n_neighbors, adata.n_obs - 1))
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, random_state=seed, key_added=key_added)


def run_leiden(
    adata, *, resolutions: Sequence[float], seed: int = 0, neighbors_key: str = "neighbors"
) -> list[str]:
    """Leiden (igraph flavour, 2 iterations, undirected) at each resolution; returns the obs keys.

    Clusters are numbered "0", "1", ... by decreasing size (scanpy's convention).
    Writes: obs[leiden_key(resolution)] (categorical) and uns[leiden_key(resolution)] per resolution.
    """
    import scanpy as sc

    keys = []
    for resolution in resolutions:
        key = leiden_key(resolution)
        sc.tl.leiden(
            adata,
            resolution=float(resolution),
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
            key_added=key,
            neighbors_key=neighbors_key,
        )
        LOG.info(
            "Leiden at resolution %s: %d clusters.", format_resolution(resolution), adata.obs[key].nunique()
        )
        keys.append(key)
    return keys


def embed_uncorrected(adata, *, options: Mapping | None = None, seed: int = 0) -> None:
    """kNN graph and UMAP of the uncorrected PCs: the "before integration" side of the diagnostics.

    The workflow runs this in its own job (cohort_uncorrected) beside cohort_cluster, so the two
    graphs and UMAPs, each single-threaded, are computed at the same time on two cores.
    Writes: obsp["neighbors_uncorrected_distances" / "_connectivities"], uns["neighbors_uncorrected"],
    obsm["X_umap_pca"], uns["X_umap_pca"].
    """
    p = cohort_params(options)
    build_graph(
        adata,
        use_rep="X_pca",
        n_neighbors=int(p["n_neighbors"]),
        seed=int(seed),
        key_added=UNCORRECTED_NEIGHBORS,
    )
    run_umap(
        adata,
        neighbors_key=UNCORRECTED_NEIGHBORS,
        key_added=UNCORRECTED_UMAP,
        seed=int(seed),
        min_dist=float(p["umap_min_dist"]),
    )


def graph_distances(adata, neighbors_key: str = "neighbors"):
    """The kNN distance matrix of the graph under uns[neighbors_key]: scanpy names it in
    uns[neighbors_key]["distances_key"] (obsp["distances"] for the default key, obsp["<key>_distances"]
    for any other), so the name is looked up, not built."""
    return adata.obsp[adata.uns[neighbors_key]["distances_key"]]


def add_uncorrected(adata, uncorrected) -> None:
    """Copy embed_uncorrected's graph and UMAP (from cohort_uncorrected's object) into `adata`.

    Writes: the obsm, obsp and uns entries embed_uncorrected writes (without uns["X_umap_pca"]).
    """
    if not adata.obs_names.equals(uncorrected.obs_names):
        raise InputError(
            "The uncorrected embedding and the clustered cohort hold different cells; "
            "rerun cohort_uncorrected (snakemake --forcerun cohort_uncorrected)."
        )
    adata.obsm[UNCORRECTED_UMAP] = uncorrected.obsm[UNCORRECTED_UMAP]
    for suffix in ("distances", "connectivities"):
        adata.obsp[f"{UNCORRECTED_NEIGHBORS}_{suffix}"] = uncorrected.obsp[
            f"{UNCORRECTED_NEIGHBORS}_{suffix}"
        ]
    adata.uns[UNCORRECTED_NEIGHBORS] = uncorrected.uns[UNCORRECTED_NEIGHBORS]


def integrate_and_cluster(
    adata, *, options: Mapping | None = None, seed: int = 0, threads: int = 1, uncorrected: bool = True
) -> None:
    """Harmony (unless integration is none), kNN graph, UMAP and Leiden (the second cohort rule).

    With `uncorrected` (and Harmony) also embed_uncorrected's graph and X_umap_pca; the workflow
    passes False and computes those in a job of their own.
    Writes: obsm["X_pca_harmony"] (with Harmony), the integrated graph (obsp["distances"],
    obsp["connectivities"], uns["neighbors"]), obsm["X_umap"], obs["leiden_<res>"] per resolution,
    and uns["cohort"] entries: integration, integrated_rep, uncorrected_neighbors_key and
    uncorrected_umap_key (where the uncorrected graph and UMAP are: the integrated ones when there
    is no integration), leiden_keys, default_cluster_key, versions.
    """
    from ..runtime import package_versions

    p = cohort_params(options)
    seed = int(seed)
    integrated = False
    if p["integration"] == "harmony":
        integrated = run_harmony(
            adata,
            batch_keys=p["batch_keys"],
            seed=seed,
            theta=float(p["harmony_theta"]),
            max_iter=int(p["harmony_max_iter"]),
            threads=threads,
        )
    elif p["integration"] != "none":
        raise InputError(f"config: cohort.integration is {p['integration']!r}; use 'harmony' or 'none'.")
    else:
        LOG.info("cohort.integration is none: the graph is built on the uncorrected PCs.")
    rep = "X_pca_harmony" if integrated else "X_pca"
    if integrated and uncorrected:
        embed_uncorrected(adata, options=p, seed=seed)
    build_graph(adata, use_rep=rep, n_neighbors=int(p["n_neighbors"]), seed=seed)
    run_umap(
        adata, neighbors_key="neighbors", key_added="X_umap", seed=seed, min_dist=float(p["umap_min_dist"])
    )
    keys = run_leiden(adata, resolutions=p["leiden_resolutions"], seed=seed)
    adata.uns["cohort"] = {
        **dict(adata.uns.get("cohort", {})),
        "integration": "harmony" if integrated else "none",
        "integrated_rep": rep,
        "uncorrected_neighbors_key": UNCORRECTED_NEIGHBORS if integrated else "neighbors",
        "uncorrected_umap_key": UNCORRECTED_UMAP if integrated else "X_umap",
        "leiden_keys": keys,
        "default_cluster_key": leiden_key(p["default_resolution"]),
        "versions": package_versions(),
    }
