"""The per-sample QC stage: load -> QC metrics and thresholds -> Scrublet -> per-sample page, and
the cross-sample summary.

One entry function per rule of workflow/rules/qc.smk, plus the DAG-time input checks that
workflow/rules/common.smk and config_checks.check_inputs run for every sample. Importing the
package is cheap (anndata, no scanpy, Scrublet or matplotlib: those load when a rule runs), since
the Snakefile imports it whenever the DAG is built.
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "doublets_sample": ".doublets",
    "load_sample": ".load",
    "qc_sample": ".metrics",
    "qc_report_sample": ".page",
    "InputSummary": ".probe",
    "inspect_input": ".probe",
    "probe_input": ".probe",
    "qc_summary": ".summary",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
