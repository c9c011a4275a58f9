"""Self-contained HTML pages: inline CSS and images, every user string escaped.

Used by the per-sample QC pages and the aggregated report, so both look alike and neither
requests anything from a network.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;line-height:1.45}
header{background:#234;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:1.4em}
nav{position:sticky;top:0;background:#f4f6f8;border-bottom:1px solid #ccd;padding:6px 24px;z-index:2}
nav a{margin-right:16px;color:#235;text-decoration:none;font-weight:600}
main{padding:8px 24px 40px;max-width:1280px}
section{margin-top:24px}
h2{border-bottom:2px solid #dde;padding-bottom:4px}
table{border-collapse:collapse;font-size:0.88em;margin:8px 0}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:left}
th{background:#eef1f5;cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 12px;margin:6px 0}
.note{color:#555;font-size:0.9em}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid figure{margin:0;flex:1 1 420px}
figcaption{font-size:0.85em;color:#555}
input.filter{margin:4px 0;padding:3px 6px;width:260px}
"""


def escape(value) -> str:
    """HTML-escape any value shown on a page (sample names, conditions, config values...)."""
    return html.escape(str(value), quote=True)


def figure_to_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure as an inline PNG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_to_data_uri(path: str | Path) -> str:
    data = Path(path).read_bytes()
    mime = "image/svg+xml" if str(path).endswith(".svg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def image(uri: str, alt: str, caption: str | None = None) -> str:
    figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{figcaption}</figure>'


def format_number(value) -> str:
    """Counts as integers with thousands separators, other numbers to 3 significant digits."""
    if value is None or pd.isna(value):
        return ""
    value = float(value)
    if value.is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(
    df: pd.DataFrame, table_id: str | None = None, float_format: str | None = None, index: bool = False
) -> str:
    """A plain HTML table, values escaped, numbers right-aligned."""
    frame = df.reset_index() if index else df
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                text = (
                    float_format.format(value)
                    if float_format and not pd.isna(value)
                    else format_number(value)
                )
                cells.append(f'<td class="num">{escape(text)}</td>')
            else:
                cells.append(f"<td>{'' if value is None else escape(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    id_attr = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{id_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, sections: list[tuple[str, str, str]], script: str = "") -> str:
    """A whole page: `sections` are (anchor id, heading, inner HTML already escaped)."""
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{escape(anchor)}"><h2>{escape(heading)}</h2>{inner}</section>'
        for anchor, heading, inner in sections
    )
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1></header><nav>{nav}</nav><main>{body}</main>{script_tag}</body></html>"
    )
