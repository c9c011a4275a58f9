"""The report stage's rules: the aggregated report, the MultiQC custom content and MultiQC."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path


def report_html(
    *,
    samples: Sequence[str],
    thresholds: Sequence[str],
    cells: Sequence[str],
    qc_pages: Sequence[str],
    umap: str,
    umap_uncorrected: str,
    integration_metrics: str,
    integration_plot: str,
    merge_summary: str,
    markers: str,
    cluster_dotplot: str,
    cluster_annotation: str,
    missing_markers: str,
    composition: str,
    composition_by_condition: str,
    celltype_dotplot: str,
    composition_plot: str,
    method_agreement: str | None,
    de_summary: str | None,
    de_dirs: Sequence[str],
    output: str,
    sheet: Sequence[Mapping],
    config: Mapping,
    contrasts: Sequence[Mapping],
    annotation_key: str,
    checksum_paths: Mapping[str, str],
    log: logging.Logger,
    composition_tests: Sequence[str] = (),
    de_metadata: str | None = None,
    qc_summary: str | None = None,
    cluster_composition: str | None = None,
    cell_types: str | None = None,
) -> None:
    """Write results/report.html from the stages' tables and figures.

    thresholds, cells, qc_pages: one path per sample (in `samples` order); de_dirs: one folder per
    contrast (in `contrasts` order), and so composition_tests (results/composition/<contrast>.tsv, when
    the DE stage runs); sheet: the sample sheet as records; method_agreement and
    de_summary: None when the workflow does not make them; cluster_composition and cell_types:
    the annotation's labels per cluster and per cell (None: the cluster table's labels only).
    """
    import pandas as pd

    from ..runtime import atomic_path, package_versions
    from .build import build_report
    from .data import ReportInputs

    samples = list(samples)
    inputs = ReportInputs(
        thresholds=dict(zip(samples, thresholds, strict=True)),
        cells=dict(zip(samples, cells, strict=True)),
        qc_pages=dict(zip(samples, qc_pages, strict=True)),
        umap=umap,
        umap_uncorrected=umap_uncorrected,
        integration_metrics=integration_metrics,
        integration_plot=integration_plot,
        merge_summary=merge_summary,
        markers=markers,
        cluster_dotplot=cluster_dotplot,
        cluster_annotation=cluster_annotation,
        cluster_composition=cluster_composition or None,
        cell_types=cell_types or None,
        missing_markers=missing_markers,
        composition=composition,
        composition_by_condition=composition_by_condition,
        celltype_dotplot=celltype_dotplot,
        composition_plot=composition_plot,
        method_agreement=method_agreement or None,
        de_summary=de_summary or None,
        de_dirs={c["name"]: d for c, d in zip(contrasts, de_dirs, strict=True)},
        composition_tests={c["name"]: t for c, t in zip(contrasts, composition_tests, strict=False)},
        de_metadata=de_metadata or None,
        qc_summary=qc_summary or None,
    )
    text = build_report(
        inputs,
        config,
        sheet=pd.DataFrame(list(sheet)).set_index("sample"),
        versions=package_versions(),
        checksum_paths=checksum_paths,
        report_path=output,
        contrasts=contrasts,
        annotation_key=annotation_key,
    )
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("Wrote %s (%.1f MB).", output, len(text.encode("utf-8")) / 1e6)


def multiqc_content(
    *,
    samples: Sequence[str],
    thresholds: Sequence[str],
    cells: Sequence[str],
    general_stats_output: str,
    qc_table_output: str,
    cells_output: str,
    log: logging.Logger,
) -> None:
    """Write the per-sample QC numbers as MultiQC custom-content files (*_mqc.tsv)."""
    from .data import read_cells, read_json
    from .multiqc import write_custom_content
    from .tables import qc_summary_table

    samples = list(samples)
    qc = qc_summary_table(
        {s: read_json(p) for s, p in zip(samples, thresholds, strict=True)},
        {s: read_cells(p) for s, p in zip(samples, cells, strict=True)},
    )
    write_custom_content(
        qc,
        {
            "sccohort_general_stats_mqc.tsv": general_stats_output,
            "sccohort_qc_mqc.tsv": qc_table_output,
            "sccohort_cells_mqc.tsv": cells_output,
        },
    )
    log.info("Wrote MultiQC custom content for %d samples.", len(qc))


def multiqc_run(*, inputs: Sequence[str], output: str, log: logging.Logger) -> None:
    """Run MultiQC over exactly `inputs` (the custom-content files), offline, writing `output`."""
    import subprocess

    from .multiqc import multiqc_command

    output = Path(output)
    command = multiqc_command(list(inputs), output.parent, output.name)
    log.info("Running: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log.info("MultiQC output:\n%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"MultiQC failed with exit code {result.returncode}; see the log above.")
    if not output.is_file():
        raise RuntimeError(f"MultiQC finished but wrote no {output}.")
