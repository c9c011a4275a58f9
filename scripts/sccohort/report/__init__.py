"""The report stage: the aggregated results/report.html and the MultiQC files of the QC numbers.

One entry function per rule (report_html, multiqc_content, multiqc_run). The modules: data
(inputs and reading), tables (numbers), figures (what the report draws), section_* (one per
section of the page, rendered from templates/), build (the page), multiqc (custom content).
"""

from ..lazy import lazy_exports

# name -> its module, imported on first use (sccohort.lazy)
_SOURCES = {
    "multiqc_content": ".rules",
    "multiqc_run": ".rules",
    "report_html": ".rules",
}
__getattr__ = lazy_exports(__name__, _SOURCES)
__all__ = sorted(_SOURCES)
