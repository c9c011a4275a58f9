"""Self-contained HTML pages from Jinja2 templates with autoescaping on.

Used by the per-sample QC pages and the aggregated report, so both look alike, neither requests
anything from a network (inline CSS, script and images), and every user string (sample names,
conditions, cell types, genes, config values) is escaped by default: only values the code marks
safe with `markupsafe.Markup` are written as they are.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment():
    """The Jinja2 environment of every page: templates from this package, autoescaping on."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATES)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = format_number
    return env


def add_template_folder(folder: str | Path) -> None:
    """Let `render` find the templates of a stage package (e.g. ``sccohort/report/templates``)."""
    loader = environment().loader
    if str(folder) not in loader.searchpath:
        loader.searchpath.append(str(folder))


def render(template: str, **context) -> str:
    """Render a template (a file in a template folder) with `context`."""
    return environment().get_template(template).render(**context)


def render_string(source: str, **context) -> Markup:
    """Render a small inline template (a fragment built in code), escaped like a file template."""
    return Markup(environment().from_string(source).render(**context))


@dataclass
class Section:
    """One section of a page: its anchor id, heading and body (Markup rendered from a template)."""

    anchor: str
    heading: str
    body: Markup = field(default_factory=Markup)


def page(title: str, sections: Sequence[Section], *, subtitle: str = "", table_script: bool = False) -> str:
    """A whole page: header, navigation to each section, the sections in order."""
    return render(
        "base.html.j2", title=title, subtitle=subtitle, sections=sections, table_script=table_script
    )


def format_number(value) -> str:
    """Counts as integers with thousands separators, other numbers to 3 significant digits."""
    if value is None or pd.isna(value):
        return ""
    value = float(value)
    if value.is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def file_data_uri(path: str | Path) -> str:
    """A PNG or SVG file as an inline data URI."""
    data = Path(path).read_bytes()
    mime = "image/svg+xml" if str(path).endswith(".svg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _cell(value, float_format: str | None) -> dict:
    if isinstance(value, (bool, np.bool_)):
        return {"text": "yes" if value else "no", "number": None}
    if _is_number(value):
        number = float(value)
        if math.isnan(number):
            return {"text": "", "number": ""}
        text = float_format.format(number) if float_format else format_number(number)
        return {"text": text, "number": repr(number)}
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return {"text": "", "number": None}
    return {"text": value if isinstance(value, Markup) else str(value), "number": None}


def table_data(
    frame: pd.DataFrame,
    table_id: str = "",
    *,
    sortable: bool = True,
    float_formats: Mapping[str, str] | None = None,
    row_classes: Sequence[str] | None = None,
) -> dict:
    """A data frame as the `data_table` macro's input: numbers formatted and right-aligned with
    their raw value in data-v (so sorting is numeric), text escaped by the template unless the
    frame holds Markup (links the caller built)."""
    float_formats = float_formats or {}
    formats = [float_formats.get(c) for c in frame.columns]
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        css = row_classes[i] if row_classes is not None else ""
        rows.append({"css": css or "", "cells": [_cell(v, f) for v, f in zip(row, formats, strict=True)]})
    return {"id": table_id, "sortable": sortable, "columns": [str(c) for c in frame.columns], "rows": rows}
