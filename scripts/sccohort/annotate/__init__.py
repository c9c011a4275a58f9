"""Annotation stage: cell-type labels with a stated confidence, from marker genes (default), a local
CellTypist model and/or an annotated reference, plus composition tables and figures.

Modules: marker_table (read, check and match the marker table), config (the annotation block,
checked when the DAG is built), scores (marker scores and cluster labels), celltypist and
reference (the optional methods; query: their raw counts), voting (majority vote over clusters,
agreement between methods), cluster_table (cluster_annotation.tsv), composition, figures, and
stage (the rules' entry functions).
"""

from .config import check_annotation_config
from .stage import annotate_cells, annotation_figures

__all__ = ["annotate_cells", "annotation_figures", "check_annotation_config"]
