"""The per-sample QC stage: load -> QC metrics and thresholds -> Scrublet -> per-sample page, and
the cross-sample summary.

One entry function per rule of workflow/rules/qc.smk, plus the DAG-time input checks that
workflow/rules/common.smk and config_checks.check_inputs run for every sample. Importing the
package is cheap (anndata, no scanpy, Scrublet or matplotlib: those load when a rule runs), since
the Snakefile imports it whenever the DAG is built.
"""

from .doublets import doublets_sample
from .load import load_sample
from .metrics import qc_sample
from .page import qc_report_sample
from .probe import InputSummary, inspect_input, probe_input
from .summary import qc_summary

__all__ = [
    "load_sample",
    "qc_sample",
    "doublets_sample",
    "qc_report_sample",
    "qc_summary",
    "probe_input",
    "inspect_input",
    "InputSummary",
]
