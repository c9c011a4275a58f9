"""Cohort stage: merge the per-sample filtered counts, normalise, select highly variable genes, PCA,
Harmony, kNN graph, UMAP, Leiden clustering, integration diagnostics and marker genes.

One entry function per rule (cohort_merge, cohort_cluster, cohort_uncorrected, cohort_diagnostics,
cohort_markers), and what the DAG-time checks use (DEFAULTS, gene_codes, check_gene_overlap).
Modules: genes (gene flags, gene overlap, gene sets), merge (the merge, obs tidying), hvg, embed
(normalisation, PCA, Harmony, UMAP), cluster (kNN graphs, Leiden), markers, diagnostics, options
(the config block), rules (the entry functions).

Every function works on an AnnData (or the files the per-sample stage wrote) and never densifies a
cells x genes matrix: counts stay CSR float32 from the merge to the end, PCA runs on the sparse
matrix of the highly variable genes with implicit centring.

Names other stages rely on
--------------------------
- obs names of the merged object are ``"<sample>_<barcode>"`` (:func:`sccohort.names.cell_name`);
  the original barcode is kept in ``obs["barcode"]``.
- Leiden columns are named by :func:`sccohort.names.leiden_key` (``leiden_0.25``, ``leiden_0.5``,
  ``leiden_1.0``).
- ``uns["cohort"]["integrated_rep"]`` names the embedding the graph was built on
  (``X_pca_harmony``, or ``X_pca`` when integration is ``none`` or impossible).
- ``uns["cohort"]["default_cluster_key"]`` is the Leiden column used downstream.
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "check_gene_overlap": ".genes",
    "gene_codes": ".genes",
    "DEFAULTS": ".options",
    "cohort_cluster": ".rules",
    "cohort_diagnostics": ".rules",
    "cohort_markers": ".rules",
    "cohort_merge": ".rules",
    "cohort_uncorrected": ".rules",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
