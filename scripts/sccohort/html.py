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


# --------------------------------------------------------------------------------------------
# Additions for the aggregated report (results/report.html). The functions above keep their
# signatures: the per-sample QC pages use them.
# --------------------------------------------------------------------------------------------
REPORT_STYLE = """
header p{margin:2px 0 0;font-size:0.9em;color:#cdd}
nav{display:flex;flex-wrap:wrap;gap:4px 16px}
nav a{margin-right:0}
h3{margin:18px 0 6px;font-size:1.1em}
.scroll{max-height:460px;overflow:auto;border:1px solid #dde;display:inline-block;max-width:100%}
.scroll table{margin:0}
.scroll thead th{position:sticky;top:0}
table.sortable th:after{content:" \\2195";color:#99a;font-size:0.8em}
table.sortable th[aria-sort=ascending]:after{content:" \\2191";color:#235}
table.sortable th[aria-sort=descending]:after{content:" \\2193";color:#235}
tr.total td{font-weight:600;background:#f6f7f9}
td.bad{color:#a22;font-weight:600}
details{margin:6px 0;border:1px solid #dde;border-radius:4px;padding:4px 10px}
details>summary{cursor:pointer;font-weight:600}
details[open]>summary{margin-bottom:6px}
pre{background:#f6f7f9;border:1px solid #dde;padding:8px;overflow:auto;max-height:520px;font-size:0.82em}
.count{color:#555;font-size:0.85em;margin-left:8px}
.kv td:first-child{font-weight:600}
.grid figure.wide{flex:1 1 100%}
.de-group{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.de-group figure{margin:0;flex:0 1 460px}
.de-group .tablebox{flex:1 1 520px;min-width:0}
.ok{color:#2a6;font-weight:600}
tr.skipped td{color:#777}
h4{margin:12px 0 4px}
main figure{margin:10px 0}
.fig-s{max-width:640px}.fig-m{max-width:900px}.fig-l{max-width:1100px}
td a{white-space:nowrap}
"""

# Vanilla JS, no library: click a header to sort (numbers by their data-v value), type in the box
# above a table to keep the rows that contain the text. It reads only the DOM, so no user string
# is ever placed in script code.
TABLE_SCRIPT = """
(function(){
  function key(cell){
    var v = cell.getAttribute('data-v');
    if (v !== null && v !== '') { var n = parseFloat(v); if (!isNaN(n)) return [0, n]; }
    var t = cell.textContent.trim();
    return t === '' ? [2, ''] : [1, t.toLowerCase()];
  }
  function compare(a, b){
    if (a[0] !== b[0]) return a[0] - b[0];
    if (a[1] < b[1]) return -1;
    if (a[1] > b[1]) return 1;
    return 0;
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function(th, column){
      th.setAttribute('title', 'click to sort');
      th.addEventListener('click', function(){
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(r1, r2){
          var a = key(r1.cells[column]), b = key(r2.cells[column]);
          if (a[0] === 2 || b[0] === 2) return a[0] - b[0];
          return ascending ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function(input){
    var table = document.getElementById(input.getAttribute('data-table'));
    var counter = document.getElementById(input.getAttribute('data-table') + '-count');
    if (!table) return;
    input.addEventListener('input', function(){
      var query = input.value.trim().toLowerCase();
      var rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function(row){
        var hit = query === '' || row.textContent.toLowerCase().indexOf(query) >= 0;
        row.style.display = hit ? '' : 'none';
        if (hit) shown += 1;
      });
      if (counter) counter.textContent = shown + ' of ' + rows.length + ' rows';
    });
  });
})();
"""


def _cell(value, raw: bool = False, float_format: str | None = None) -> str:
    if raw:
        return f"<td>{'' if value is None else value}</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)) or _is_numpy_number(value):
        number = float(value)
        if pd.isna(number):
            return '<td class="num" data-v=""></td>'
        text = float_format.format(number) if float_format else format_number(number)
        return f'<td class="num" data-v="{number!r}">{escape(text)}</td>'
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "<td></td>"
    return f"<td>{escape(value)}</td>"


def _is_numpy_number(value) -> bool:
    import numpy as np

    return isinstance(value, (np.integer, np.floating))


def data_table(
    df: pd.DataFrame,
    table_id: str,
    *,
    sortable: bool = True,
    searchable: bool = False,
    html_columns=(),
    float_formats: dict | None = None,
    row_classes=None,
    scroll: bool = False,
    placeholder: str = "filter rows...",
) -> str:
    """A table for the aggregated report: every value escaped except `html_columns` (the caller
    builds and escapes those, e.g. links), numbers right-aligned with their raw value in data-v
    (so sorting is numeric), optional search box (TABLE_SCRIPT) and scroll box."""
    float_formats = float_formats or {}
    columns = list(df.columns)
    raw = [c in set(html_columns) for c in columns]
    formats = [float_formats.get(c) for c in columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = "".join(_cell(v, r, f) for v, r, f in zip(row, raw, formats, strict=True))
        css = row_classes[i] if row_classes is not None and row_classes[i] else ""
        rows.append(f'<tr class="{escape(css)}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    classes = "sortable" if sortable else ""
    table_html = (
        f'<table id="{escape(table_id)}" class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    if scroll:
        table_html = f'<div class="scroll">{table_html}</div>'
    if searchable:
        search = (
            f'<div><input class="filter" type="search" data-table="{escape(table_id)}" '
            f'placeholder="{escape(placeholder)}" aria-label="{escape(placeholder)}">'
            f'<span class="count" id="{escape(table_id)}-count">{len(df)} rows</span></div>'
        )
        table_html = search + table_html
    return table_html


def report_page(
    title: str,
    sections: list[tuple[str, str, str]],
    subtitle: str = "",
    script: str = TABLE_SCRIPT,
    extra_style: str = REPORT_STYLE,
) -> str:
    """Like page(), with the report's extra CSS, a subtitle line and the table script.

    `sections` are (anchor id, heading, inner HTML already escaped); `subtitle` is escaped here.
    """
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{escape(anchor)}"><h2>{escape(heading)}</h2>{inner}</section>'
        for anchor, heading, inner in sections
    )
    sub = f"<p>{escape(subtitle)}</p>" if subtitle else ""
    script_tag = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}{extra_style}</style></head><body>"
        f"<header><h1>{escape(title)}</h1>{sub}</header><nav>{nav}</nav><main>{body}</main>"
        f"{script_tag}</body></html>"
    )
