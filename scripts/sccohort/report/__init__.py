"""The report stage: the aggregated results/report.html and the MultiQC files of the QC numbers.

One entry function per rule (report_html, multiqc_content, multiqc_run). The modules: data
(inputs and reading), tables (numbers), figures (what the report draws), section_* (one per
section of the page, rendered from templates/), build (the page), multiqc (custom content).
"""

from ..lazy import lazy_exports

# name -> the module it comes from; imported on first use (sccohort.lazy), so that building the
# DAG loads only the modules of the checks it calls
_SOURCES = {
    "multiqc_content": ".rules",
    "multiqc_run": ".rules",
    "report_html": ".rules",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
