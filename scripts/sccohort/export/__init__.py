"""Export stage: the results in the formats other tools open. results/export/cellxgene.h5ad (the
CELLxGENE schema: counts in raw.X, Ensembl ids, ontology terms, validated by cellxgene-schema in
the test suite) and results/cellbrowser/ (a static UCSC Cell Browser site).

Modules: config (the export block and the per-sample CELLxGENE metadata, resolved and checked
when the DAG is built), cellxgene (the schema's AnnData from integrated.h5ad), cellbrowser (the
Cell Browser site) and rules (the rules' entry functions).
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "check_export_config": ".config",
    "export_cellbrowser": ".rules",
    "export_cellxgene": ".rules",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
