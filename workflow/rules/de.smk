# Stage rules: de -- pseudobulk differential expression between conditions (de.method:
# limma-voom, edgeR QL or PyDESeq2) and the cell-type composition test.
#
# de_pseudobulk sums raw counts per sample x group; de_contrast tests every group for one
# contrast (groups are only known after annotation, so each contrast writes one folder);
# de_summary lists every group x contrast, tested or skipped with its reason; composition_test
# tests the cell-type shares per contrast (propeller, same design and samples).
import re

from sccohort import de as de_config_checks  # noqa: E402
from sccohort.sheet import covariate_columns  # noqa: E402

try:
    DE_CONTRASTS = de_config_checks.check_de_config(config, samples)
    DE_DESIGN_VARIABLES = de_config_checks.design_variables(config["de"]["design"])
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None
DE_CONTRAST_NAMES = [c["name"] for c in DE_CONTRASTS]


# Lambdas, not functions: `snakemake --lint` flags rule files that define functions.
# The normalised contrast (name, factor, test, reference) of one de_contrast job.
de_contrast = lambda wildcards: next(
    c for c in DE_CONTRASTS if c["name"] == wildcards.contrast
)
# Targets of the DE stage (none when de.contrasts is empty); all_outputs() calls it.
de_outputs = lambda: (
    [
        f"{RESULTS}/de/pseudobulk/counts.tsv.gz",
        f"{RESULTS}/de/pseudobulk/metadata.tsv",
        f"{RESULTS}/de/summary.tsv",
    ]
    + expand(f"{RESULTS}/de/{{contrast}}", contrast=DE_CONTRAST_NAMES)
    + expand(
        f"{RESULTS}/composition/{{contrast}}.{{ext}}",
        contrast=DE_CONTRAST_NAMES,
        ext=["tsv", "png"],
    )
    if DE_CONTRASTS
    else []
)


rule de_pseudobulk:
    input:
        h5ad=f"{RESULTS}/cohort/integrated.h5ad",
    output:
        counts=f"{RESULTS}/de/pseudobulk/counts.tsv.gz",
        metadata=report(
            f"{RESULTS}/de/pseudobulk/metadata.tsv",
            caption="../report/de_pseudobulk.rst",
            category="4. Differential expression",
            subcategory="Pseudobulk",
            labels={"table": "pseudobulk samples"},
        ),
    log:
        "logs/de/pseudobulk.log",
    benchmark:
        "benchmarks/de/pseudobulk.tsv"
    conda:
        "../../envs/de.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(1000, 4),
        runtime=runtime_from_input(5, 0.02),
    params:
        group_by=config["de"]["group_by"],
        layer="counts",
        min_cells=config["de"]["min_cells"],
        covariates=[c for c in covariate_columns(samples) if c != "sample"],
        required=sorted(set(DE_DESIGN_VARIABLES) | {c["factor"] for c in DE_CONTRASTS}),
    script:
        "../../scripts/de_pseudobulk.py"


rule de_contrast:
    input:
        counts=rules.de_pseudobulk.output.counts,
        metadata=rules.de_pseudobulk.output.metadata,
    output:
        report(
            directory(f"{RESULTS}/de/{{contrast}}"),
            patterns=["figures/{group}.{plot}.png"],
            caption="../report/de_figures.rst",
            category="4. Differential expression",
            subcategory="{contrast}",
            labels={"contrast": "{contrast}", "group": "{group}", "plot": "{plot}"},
        ),
    log:
        "logs/de/{contrast}.log",
    benchmark:
        "benchmarks/de/{contrast}.tsv"
    wildcard_constraints:
        contrast="|".join(re.escape(n) for n in DE_CONTRAST_NAMES) or "(?!)",
    conda:
        "../../envs/de.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb_from_input(1500, 20),
        runtime=runtime_from_input(15, 2),
    params:
        contrast=de_contrast,
        # the de: block without the contrast list: changing one contrast reruns that contrast only
        de={key: value for key, value in config["de"].items() if key != "contrasts"},
    script:
        "../../scripts/de_contrast.py"


rule de_summary:
    input:
        expand(f"{RESULTS}/de/{{contrast}}", contrast=DE_CONTRAST_NAMES),
    output:
        report(
            f"{RESULTS}/de/summary.tsv",
            caption="../report/de_summary.rst",
            category="4. Differential expression",
            subcategory="Summary",
            labels={"table": "tested and skipped groups"},
        ),
    log:
        "logs/de/summary.log",
    benchmark:
        "benchmarks/de/summary.tsv"
    conda:
        "../../envs/de.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(500, 1),
        runtime=runtime_from_input(2, 0.01),
    script:
        "../../scripts/de_summary.py"


rule composition_test:
    input:
        metadata=rules.de_pseudobulk.output.metadata,
    output:
        table=report(
            f"{RESULTS}/composition/{{contrast}}.tsv",
            caption="../report/composition_test.rst",
            category="4. Differential expression",
            subcategory="Composition",
            labels={"contrast": "{contrast}", "table": "composition test"},
        ),
        figure=report(
            f"{RESULTS}/composition/{{contrast}}.png",
            caption="../report/composition_test.rst",
            category="4. Differential expression",
            subcategory="Composition",
            labels={"contrast": "{contrast}", "figure": "shares per sample"},
        ),
    log:
        "logs/composition/{contrast}.log",
    benchmark:
        "benchmarks/composition/{contrast}.tsv"
    wildcard_constraints:
        contrast="|".join(re.escape(n) for n in DE_CONTRAST_NAMES) or "(?!)",
    conda:
        "../../envs/de.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_from_input(500, 2),
        runtime=runtime_from_input(5, 0.01),
    params:
        contrast=de_contrast,
        de=config["de"],
    script:
        "../../scripts/composition_test.py"
