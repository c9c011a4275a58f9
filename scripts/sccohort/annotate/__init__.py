"""Annotation stage: cell-type labels with a stated confidence, from marker genes (default), a local
CellTypist model and/or an annotated reference, plus composition tables and figures.

Modules: marker_table (read, check and match the marker table), config (the annotation block,
checked when the DAG is built), scores (marker scores and cluster labels), celltypist and
reference (the optional methods; query: their raw counts), voting (majority vote over clusters,
agreement between methods), cluster_table (cluster_annotation.tsv), composition, figures, and
stage (the rules' entry functions).
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "check_annotation_config": ".config",
    "annotate_cells": ".stage",
    "annotation_figures": ".stage",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
