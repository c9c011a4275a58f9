"""The report stage: the aggregated results/report.html and the MultiQC files of the QC numbers.

One entry function per rule (report_html, multiqc_content, multiqc_run). The modules: data
(inputs and reading), tables (numbers), figures (what the report draws), section_* (one per
section of the page, rendered from templates/), build (the page), multiqc (custom content).
"""

from .rules import multiqc_content, multiqc_run, report_html

__all__ = ["multiqc_content", "multiqc_run", "report_html"]
