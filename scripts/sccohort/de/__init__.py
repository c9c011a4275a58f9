"""Stage de: pseudobulk differential expression between conditions (limma-voom by default,
edgeR's QL F-test or PyDESeq2; de.method) and the cell-type composition test (propeller).

Rules de_pseudobulk, de_contrast, de_summary and composition_test call the entry functions of
the same names; workflow/rules/de.smk calls check_de_config and design_variables when the DAG
is built.
"""

from .composition import composition_test
from .design import check_de_config, design_variables
from .pseudobulk import de_pseudobulk
from .results import de_contrast, de_summary

__all__ = [
    "check_de_config",
    "composition_test",
    "de_contrast",
    "de_pseudobulk",
    "de_summary",
    "design_variables",
]
