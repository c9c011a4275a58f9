"""Export stage: the results in the formats other tools open. results/export/cellxgene.h5ad (the
CELLxGENE schema: counts in raw.X, Ensembl ids, ontology terms, validated by cellxgene-schema in
the test suite) and results/cellbrowser/ (a static UCSC Cell Browser site).

Modules: config (the export block and the per-sample CELLxGENE metadata, resolved and checked
when the DAG is built), cellxgene (the schema's AnnData from integrated.h5ad), cellbrowser (the
Cell Browser site) and rules (the rules' entry functions).
"""

from .config import check_export_config
from .rules import export_cellbrowser, export_cellxgene

__all__ = ["check_export_config", "export_cellbrowser", "export_cellxgene"]
