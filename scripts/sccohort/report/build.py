"""The aggregated, self-contained HTML report (results/report.html), section by section.

Every user string (sample names, conditions, cell-type names, gene names, config values) is
escaped by the templates' autoescaping; the page's only script (the shared table.js) reads the
DOM and holds no data. Images are inline PNGs; nothing is requested from a network.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..pages import Section, page
from .data import ReportInputs, load, merge_warnings
from .section_clustering import section_clustering
from .section_de import section_de
from .section_integration import section_integration
from .section_qc import section_qc
from .section_summary import section_summary
from .tables import checksums, cluster_key_for, final_cells_per_sample, qc_warnings

SECTIONS = (
    ("summary", "Run summary"),
    ("qc", "Quality control"),
    ("integration", "Integration"),
    ("clustering", "Clustering and annotation"),
    ("de", "Differential expression"),
)


def build_report(
    inputs: ReportInputs,
    config: Mapping,
    *,
    sheet: pd.DataFrame | None = None,
    versions: Mapping[str, str] | None = None,
    checksum_paths: Mapping[str, str] | None = None,
    report_path: str | Path = "results/report.html",
    title: str | None = None,
    max_points: int | None = None,
    top_genes: int | None = None,
    seed: int | None = None,
    created: str | None = None,
    contrasts: Sequence[Mapping] | None = None,
    cluster_key: str | None = None,
    annotation_key: str | None = None,
) -> str:
    """The whole report as one HTML string.

    sheet: the sample sheet indexed by sample (shown and used for conditions); versions: package
    versions; checksum_paths: label -> input file or directory to checksum; report_path: where
    the page will be written (links to the per-sample QC pages are relative to it); contrasts:
    the DE contrasts as the DE stage normalised them (default: config de.contrasts);
    cluster_key / annotation_key: the Leiden columns of the cohort's default clustering and of
    the annotation (default: from cohort.default_resolution and annotation.resolution).
    """
    options = config.get("report", {})
    title = title or options.get("title", "sccohort report")
    max_points = int(max_points or options.get("max_points", 50000))
    top_genes = int(top_genes or options.get("top_genes", 50))
    seed = int(config.get("seed", 0) if seed is None else seed)
    created = created or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = load(inputs)
    default_key, default_annotation_key = cluster_key_for(config)
    data.cluster_key = cluster_key or default_key
    data.annotation_key = annotation_key or default_annotation_key
    if contrasts is None:
        contrasts = [
            {**c, "name": c.get("name") or f"{c.get('test')}_vs_{c.get('reference')}"}
            for c in config.get("de", {}).get("contrasts") or []
        ]
    # The run summary lists every section's warnings, so it is rendered last.
    warnings = qc_warnings(data.thresholds) + merge_warnings(inputs.merge_summary, data.qc)
    input_checksums = checksums(checksum_paths or {})
    missing_inputs = input_checksums.loc[input_checksums["md5"] == "not found", "file"].tolist()
    if missing_inputs:
        warnings.append(f"Input file(s) no longer present, not checksummed: {', '.join(missing_inputs)}")
    report_dir = Path(report_path).resolve().parent  # links to files are relative to it
    bodies = {
        "qc": section_qc(data, inputs, sheet=sheet, report_dir=report_dir, max_points=max_points, seed=seed),
        "integration": section_integration(
            data,
            inputs,
            config=config,
            max_points=max_points,
            seed=seed,
            report_dir=report_dir,
            warnings=warnings,
        ),
        "clustering": section_clustering(
            data, inputs, max_points=max_points, seed=seed, warnings=warnings, report_dir=report_dir
        ),
        "de": section_de(
            inputs,
            config=config,
            contrasts=contrasts,
            top_genes=top_genes,
            warnings=warnings,
            report_dir=report_dir,
        ),
    }
    bodies["summary"] = section_summary(
        data,
        sheet=sheet,
        config=config,
        versions=versions or {},
        input_checksums=input_checksums,
        warnings=warnings,
        created=created,
        report_dir=report_dir,
    )
    n_final = int(final_cells_per_sample(data.composition, data.umap).sum())
    subtitle = f"{len(data.qc)} samples, {n_final:,} cells in the final object; created {created}"
    sections = [Section(anchor, heading, bodies[anchor]) for anchor, heading in SECTIONS]
    return page(title, sections, subtitle=subtitle, table_script=True)
