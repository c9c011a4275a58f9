"""Stage de: pseudobulk differential expression between conditions (limma-voom by default,
edgeR's QL F-test or PyDESeq2; de.method) and the cell-type composition test (propeller).

Rules de_pseudobulk, de_contrast, de_summary and composition_test call the entry functions of
the same names; workflow/rules/de.smk calls check_de_config and design_variables when the DAG
is built.
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "composition_test": ".composition",
    "check_de_config": ".design",
    "design_variables": ".design",
    "de_pseudobulk": ".pseudobulk",
    "de_contrast": ".results",
    "de_summary": ".results",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
