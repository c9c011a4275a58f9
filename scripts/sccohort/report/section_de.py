"""The report's differential-expression section: the DE summary and, per contrast and tested
group, its caveats (few residual degrees of freedom, contamination genes among the calls), the DE
stage's volcano, MA and heat-map figures, the top genes by adjusted p-value and links to the
full table and the figure files.

The figures are the DE stage's own (results/de/<contrast>/figures/), embedded as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from ..pages import table_data
from .columns import column_notes
from .data import ReportInputs, optional_path, read_de_summary, read_de_table, read_tsv
from .de_warnings import group_metadata, group_warnings, split_samples
from .figures import stage_figure_uri
from .links import FIGURE_SUFFIXES, file_links, folder_files
from .render import render
from .tables import DE_GENE_COLUMNS, de_group_label, de_skipped_messages, de_summary_table, top_de_genes

# The DE stage's figures of one group: (file suffix, alt text)
GROUP_FIGURES = (("volcano", "volcano plot"), ("ma", "MA plot"), ("heatmap", "heat map of top genes"))


def _slug(text: str) -> str:
    """`text` reduced to the characters of an HTML id (for the ids of the DE tables)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def contrast_name(contrast: Mapping) -> str:
    """A contrast's name as the DE stage gives it (default: "<test>_vs_<reference>")."""
    return contrast.get("name") or f"{contrast['test']}_vs_{contrast['reference']}"


def group_part(folder: Path, row, *, name: str, index: int, context: Mapping) -> dict:
    """One tested group: its caveats, figures (the DE stage's), top genes and file links.

    `context`: top_genes, report_dir, metadata (pseudobulk metadata.tsv or None), design, alpha.
    """
    table_path = folder / f"{row.group_file}.tsv"
    if not table_path.is_file():
        return {"name": row.group, "missing_table": str(table_path)}
    table = read_de_table(table_path)
    top = top_de_genes(table, context["top_genes"])
    figures = [(folder / "figures" / f"{row.group_file}.{kind}.png", alt) for kind, alt in GROUP_FIGURES]
    warnings = group_warnings(
        contrast=name,
        group=str(row.group),
        table=table,
        metadata=group_metadata(context["metadata"], row.group_file),
        samples=split_samples(row._asdict()),
        design=context["design"],
        alpha=context["alpha"],
    )
    label = de_group_label(row)
    return {
        "name": row.group,
        "missing_table": None,
        "label": label
        + (f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})" if warnings else ""),
        "open": index == 0,
        "warnings": warnings,
        "figures": [
            {
                "uri": stage_figure_uri(path),
                "alt": f"{alt} {row.group}",
                "missing": f"{alt.capitalize()} of {row.group} not available: figures/{path.name} not found.",
            }
            for path, alt in figures
        ],
        "table": table_data(
            top[[c for c in DE_GENE_COLUMNS if c in top]],
            f"de-{_slug(name)}-{_slug(str(row.group_file))}-{index}",
        ),
        "n_top": len(top),
        "n_genes": len(table),
        "files": file_links([table_path] + [path for path, _ in figures], context["report_dir"]),
    }


# What each de.method runs (the summary's `method` column; summaries without it: PyDESeq2).
DE_METHODS = {
    "limma_voom": "limma-voom (voom precision weights, robust empirical-Bayes moderated t; edgepython)",
    "edger_ql": "edgeR quasi-likelihood F-test (glmQLFit robust; edgepython)",
    "pydeseq2": "PyDESeq2 Wald test",
}


def method_note(summary: pd.DataFrame, name: str) -> str:
    """Which test ran for contrast `name` and how many groups were tested and skipped."""
    rows = summary[summary["contrast"] == name]
    methods = sorted(set(rows["method"])) if "method" in rows else ["pydeseq2"]
    tested = int((rows["status"] == "tested").sum())
    skipped = len(rows) - tested
    test = "; ".join(DE_METHODS.get(m, m) for m in methods if m) or DE_METHODS["pydeseq2"]
    return f"Test: {test}. {tested} group(s) tested, {skipped} skipped" + (
        " (reasons under Skipped groups)." if skipped else "."
    )


def _log2_ratio_text(value: float) -> str:
    """A log2 share ratio as the table shows it; +-inf (a type absent from one side) in words."""
    if value == float("inf"):
        return "absent in reference"
    if value == float("-inf"):
        return "absent in test"
    return f"{value:.2f}"


def composition_part(path, *, alpha: float) -> dict | None:
    """The contrast's composition test (results/composition/<contrast>.tsv and .png), if any."""
    table_path = optional_path(path)
    if table_path is None:
        return None
    table = pd.read_csv(table_path, sep="\t", keep_default_na=False, na_values=[""])
    shown = table[["group", "share_reference", "share_test", "log2_share_ratio", "padj"]].copy()
    for column in ("share_reference", "share_test"):
        shown[column] = [f"{v:.3f}" for v in shown[column]]
    shown["log2_share_ratio"] = [_log2_ratio_text(v) for v in shown["log2_share_ratio"]]
    shown["padj"] = [f"{v:.2g}" for v in shown["padj"]]
    called = table.loc[table["padj"] < alpha, "group"].astype(str).tolist()
    return {
        "table": table_data(shown, f"composition-{_slug(table_path.stem)}"),
        "figure": stage_figure_uri(table_path.with_suffix(".png")),
        "called": ", ".join(called) if called else "none",
        "file": f"composition/{table_path.name}",
    }


def contrast_part(
    contrast: Mapping, summary: pd.DataFrame, inputs: ReportInputs, *, context: Mapping
) -> dict:
    """One contrast: its description, the test that ran, the heat map of all groups, every tested
    group, its files and the composition test."""
    name = contrast_name(contrast)
    part = {
        "name": name,
        "factor": contrast.get("factor", ""),
        "test": contrast.get("test", ""),
        "reference": contrast.get("reference", ""),
        "method": method_note(summary, name),
        "composition": composition_part(inputs.composition_tests.get(name), alpha=context["alpha"]),
        "found": False,
        "groups": [],
        "heatmap": None,
        "files": [],
    }
    folder = optional_path(inputs.de_dirs.get(name))
    if folder is None:
        return part
    tested = summary[(summary["contrast"] == name) & (summary["status"] == "tested")]
    heatmap = folder / "figures" / "all_groups.lfc_heatmap.png"
    part.update(
        found=True,
        heatmap=stage_figure_uri(heatmap),
        groups=[
            group_part(folder, row, name=name, index=i, context=context)
            for i, row in enumerate(tested.itertuples())
        ],
        files=file_links(
            [folder / "summary.tsv", heatmap, *folder_files(folder / "figures", FIGURE_SUFFIXES)],
            context["report_dir"],
        ),
    )
    return part


def not_run_reason(contrasts: Sequence[Mapping], summary_path) -> str | None:
    """Why the DE section has nothing to show, or None when there are results."""
    if not contrasts:
        return "no contrast is configured (de.contrasts is empty)"
    if summary_path is None:
        return "results/de/summary.tsv is absent"
    return None


def section_de(
    inputs: ReportInputs,
    *,
    config: Mapping,
    contrasts: Sequence[Mapping],
    top_genes: int,
    warnings: list,
    report_dir: Path,
) -> Markup:
    """The "Differential expression" section; appends one line for the skipped groups and every group's
    caveats to `warnings`."""
    de = config.get("de", {})
    summary_path = optional_path(inputs.de_summary)
    reason = not_run_reason(contrasts, summary_path)
    if reason:
        return render("report_de.html.j2", not_run=reason)
    summary = read_de_summary(summary_path)
    skipped = de_skipped_messages(summary)
    if skipped:  # one line in the run summary; each group's reason is under Skipped groups
        untested = summary.loc[summary["status"] != "tested"]
        listed = ", ".join(f"{r.contrast} / {r.group}" for r in untested.itertuples())
        warnings.append(
            f"DE: {len(skipped)} group(s) not tested ({listed}); the reasons are under Differential "
            "expression, Skipped groups."
        )
    metadata_path = optional_path(inputs.de_metadata)
    context = {
        "top_genes": top_genes,
        "report_dir": report_dir,
        "metadata": read_tsv(metadata_path, dtype=str) if metadata_path else None,
        "design": de.get("design", "~ condition"),
        "alpha": float(de.get("alpha", 0.05)),
    }
    parts = [contrast_part(c, summary, inputs, context=context) for c in contrasts]
    warnings.extend(w for part in parts for group in part["groups"] for w in group.get("warnings") or [])
    shown = de_summary_table(summary)
    pseudobulk = [metadata_path, metadata_path.with_name("counts.tsv.gz")] if metadata_path else []
    return render(
        "report_de.html.j2",
        not_run=None,
        group_by=de.get("group_by", "group"),
        design=de.get("design", ""),
        alpha=f"{float(de.get('alpha', 0.05)):g}",
        summary=table_data(
            shown, "de-summary", row_classes=["" if s == "tested" else "skipped" for s in summary["status"]]
        ),
        summary_notes=column_notes(shown.columns),
        gene_notes=column_notes(DE_GENE_COLUMNS),
        summary_searchable=len(summary) > 10,
        summary_files=file_links([summary_path, *pseudobulk], report_dir),
        skipped=skipped,
        contrasts=parts,
    )
