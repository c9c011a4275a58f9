# sccohort: multi-sample scRNA-seq from count matrices to QC, integration, annotation,
# pseudobulk differential expression and one HTML report.
from snakemake.utils import min_version

min_version("9.0")


# the config files must read as written (syntax, repeated options) before configfile: reads them
include: "workflow/rules/config_files.smk"


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/annotation.smk"
include: "workflow/rules/de.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


# A few lines on what the checks of the rules files above looked at (snakemake -n shows them).
print_dag_summary()


rule all:
    default_target: True
    input:
        all_outputs(),
