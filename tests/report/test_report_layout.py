"""The report's layout in a real browser (Debian's headless Chromium) at 1,024 and 1,400 px: no
table wider than its box (a table may scroll sideways inside its own box, never past the page),
no box that hides rows, every linked file present. Screenshots of each width are kept in the
test's tmp folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from report.test_report_workflow import Chromium, needs_chromium

WIDTHS = (1024, 1400)
# Every problem of the page as text: tables past their container, boxes hiding rows, the page
# wider than the window. Closed <details> are opened first (their tables count too).
LAYOUT_PROBLEMS = """
(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const problems = [];
  const name = t => t.id || (t.closest('section') ? t.closest('section').id : '') + ' table ' + t.rows.length + ' rows';
  const contentRight = el => { const s = getComputedStyle(el); return el.getBoundingClientRect().right - parseFloat(s.paddingRight) - parseFloat(s.borderRightWidth); };
  for (const table of document.querySelectorAll('table')) {
    let box = table.parentElement, scroller = null;
    while (box && box !== document.body) {
      const s = getComputedStyle(box);
      if (['auto', 'scroll'].includes(s.overflowX) || ['auto', 'scroll', 'hidden'].includes(s.overflowY)) { scroller = box; break; }
      box = box.parentElement;
    }
    if (scroller) {
      if (scroller.scrollHeight > scroller.clientHeight + 2) problems.push(name(table) + ': its box hides rows (' + scroller.scrollHeight + ' > ' + scroller.clientHeight + ' px)');
      const outer = scroller.parentElement;
      if (scroller.getBoundingClientRect().right > contentRight(outer) + 1) problems.push(name(table) + ': its scroll box is wider than its container');
    } else if (table.getBoundingClientRect().right > contentRight(table.parentElement) + 1) {
      problems.push(name(table) + ': wider than its container (' + Math.round(table.getBoundingClientRect().width) + ' px)');
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth) problems.push('page wider than the window: ' + document.documentElement.scrollWidth + ' px');
  return problems;
})()
"""
LINKS = "Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')).filter(h => !h.startsWith('#'))"


def open_page(browser: Chromium, page: Path) -> str:
    """Open `page` in a new tab (the events of earlier pages dropped first: wait_for would take
    an earlier page's load event for this one's)."""
    browser.events.clear()
    session = browser.open(page)
    assert browser.errors() == [], browser.errors()
    return session


def layout_problems(browser: Chromium, session: str) -> list[str]:
    return browser.evaluate(session, LAYOUT_PROBLEMS)


@needs_chromium
@pytest.mark.browser
def test_layout_detector_catches_overflow_and_hidden_rows(tmp_path):
    """Control: a table wider than its box and a box that cuts rows off must both be reported."""
    rows = "".join(f"<tr><td>{'x' * 200}</td><td>{i}</td></tr>" for i in range(40))
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        f"<div style='width:300px'><table id='wide'>{rows}</table></div>"
        f"<div style='max-height:200px;overflow:auto'><table id='cut'>{rows}</table></div>"
        "</body></html>"
    )
    browser = Chromium(width=1024)
    try:
        problems = layout_problems(browser, open_page(browser, page))
    finally:
        browser.close()
    assert any(p.startswith("wide: wider than its container") for p in problems), problems
    assert any(p.startswith("cut: its box hides rows") for p in problems), problems
    assert any(p.startswith("page wider than the window") for p in problems), problems


@pytest.mark.slow
@needs_chromium
@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS)
def test_report_tables_fit_and_links_resolve(full_run, width, tmp_path):
    results = full_run / "results"
    pages = [results / "report.html", results / "qc" / "summary.html"]
    browser = Chromium(width=width, height=900)
    try:
        for page in pages:
            session = open_page(browser, page)
            problems = layout_problems(browser, session)  # opens every <details>
            (tmp_path / f"{page.stem}_{width}.png").write_bytes(browser.screenshot(session, full_page=True))
            assert problems == [], f"{page.name} at {width} px:\n" + json.dumps(problems, indent=1)
            links = browser.evaluate(session, LINKS)
            missing = [h for h in links if not (page.parent / unquote(h)).exists()]
            assert not missing, f"{page.name} links to files that do not exist: {missing}"
            if page.name == "report.html":
                assert len(links) > 20  # QC pages and summary, every stage's tables and figures
                for expected in ("qc/summary.html", "annotation/cluster_annotation.tsv", "de/summary.tsv"):
                    assert expected in links, expected
                assert any(h.endswith(".ma.png") for h in links) and any(
                    h.endswith(".heatmap.png") for h in links
                )
    finally:
        browser.close()
