"""Stage de: pseudobulk differential expression between conditions with PyDESeq2.

Rules de_pseudobulk, de_contrast and de_summary call the entry functions of the same names;
workflow/rules/de.smk calls check_de_config and design_variables when the DAG is built.
"""

from .design import check_de_config, design_variables
from .pseudobulk import de_pseudobulk
from .results import de_contrast, de_summary

__all__ = ["check_de_config", "de_contrast", "de_pseudobulk", "de_summary", "design_variables"]
