"""The report stage in the real workflow: results/report.html and the MultiQC files of the shared
`full_run` project, `snakemake --report`, and the pages in a real browser.

Browser tests open the page from file:// in Debian's headless Chromium, driven over the DevTools
protocol on --remote-debugging-pipe (NUL-separated JSON on file descriptors 3 and 4, stdlib
only), and check console errors, network requests, the rendered DOM and a screenshot.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_workflow
from report.synthetic import (
    HOSTILE_CONDITION,
    HOSTILE_GENE,
    HOSTILE_TYPE,
    HOSTILE_TYPE_2,
    SECTIONS,
    Page,
    mqc_table,
    number,
)
from sccohort import pages

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


# ---------------------------------------------------------------------------------------------
# The real workflow (shared full_run project)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_report(full_run):
    path = full_run / "results" / "report.html"
    assert path.is_file(), "rule all did not write results/report.html"
    return full_run, path.read_text()


@pytest.mark.slow
def test_workflow_report_matches_the_stage_outputs(full_report):
    project, text = full_report
    page = Page(text)
    assert page.scripts == [pages.render("table.js")]
    assert {attrs.get("id") for tag, attrs in page.tags if tag == "section"} == set(SECTIONS)
    steps = page.frame("cells-per-step").set_index("sample")
    umap = pd.read_csv(project / "results" / "cohort" / "umap_coords.tsv.gz", sep="\t")
    sheet = pd.read_csv(project / "config" / "samples.tsv", sep="\t")
    for sample in sheet["sample"]:
        info = json.loads((project / "results" / "qc" / sample / "thresholds.json").read_text())
        assert number(steps.loc[sample, "cells in"]) == info["status"]["n_cells_input"]
        assert number(steps.loc[sample, "after QC thresholds"]) == info["status"]["n_cells_after_qc"]
        assert number(steps.loc[sample, "after doublet removal"]) == info["status"]["n_cells_kept"]
        assert number(steps.loc[sample, "in final object"]) == (umap["sample"] == sample).sum()
        assert f'href="qc/{sample}/report.html"' in text
    assert number(steps.loc["total", "in final object"]) == len(umap)
    # every tested DE group has its volcano and top-gene table
    summary = pd.read_csv(project / "results" / "de" / "summary.tsv", sep="\t")
    tested = summary[summary["status"] == "tested"]
    assert len(tested) > 0
    assert len([t for t in page.tables if t.startswith("de-")]) == len(tested) + 1  # + the summary table
    assert text.count('alt="volcano plot') == len(tested)
    for tag, attrs in page.tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    assert len(text.encode()) < 15e6


@pytest.mark.slow
def test_workflow_writes_multiqc_content(full_run):
    folder = full_run / "results" / "multiqc"
    general = mqc_table((folder / "sccohort_general_stats_mqc.tsv").read_text())
    for sample in general.index:
        info = json.loads((full_run / "results" / "qc" / sample / "thresholds.json").read_text())
        assert general.loc[sample, "cells_in"] == info["status"]["n_cells_input"]
        assert general.loc[sample, "cells_kept"] == info["status"]["n_cells_kept"]


@pytest.mark.slow
def test_snakemake_report_zip_and_html(full_run):
    for name in ("snakemake_report.zip", "snakemake_report.html"):
        target = full_run / "results" / name
        run_workflow(full_run, extra=["--report", str(target)])
        assert target.is_file() and target.stat().st_size > 10_000
    with zipfile.ZipFile(full_run / "results" / "snakemake_report.zip") as archive:
        names = archive.namelist()
    for expected in (
        "report.html",
        "umap_cell_type.png",
        "integration_metrics.tsv",
        "summary.tsv",
        "volcano.png",
    ):
        assert any(n.endswith(expected) for n in names), f"{expected} not in the Snakemake report"


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------
class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe: the DevTools protocol as
    NUL-terminated JSON messages, commands on the child's fd 3, replies and events on its fd 4."""

    def __init__(self, width: int = 1366, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="sccohort-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def as_fd3_fd4():
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            command,
            pass_fds=(3, 4),
            preexec_fn=as_fd3_fd4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.width, self.height = width, height

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message from chromium")
            if select.select([self._read], [], [], left)[0]:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(max(0.01, deadline - time.monotonic())))

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(self._message(left))
            except TimeoutError:
                break

    def open(self, path: Path) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        self.settle(1.0)
        return session

    def evaluate(self, session: str, expression: str):
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, session: str, full_page: bool = False) -> bytes:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            height = self.evaluate(session, "document.documentElement.scrollHeight")
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": min(height, 16000), "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params, session=session)["data"])

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", "")[:500])
        return found

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=15)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


def _external(requests: list[str], page: Path) -> list[str]:
    """Requests other than the page itself and inline data: URIs."""
    return [u for u in requests if not u.startswith("data:") and u != page.resolve().as_uri()]


def _pixel_spread(png: bytes) -> float:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return float(image.std())


@needs_chromium
@pytest.mark.browser
def test_browser_detector_catches_errors_and_requests(chromium, tmp_path):
    """Control: a page with a script error, a console error and a request must be caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    chromium.open(page)
    assert len(chromium.errors()) >= 2
    assert any(u.startswith("http://127.0.0.1:9/") for u in _external(chromium.requests(), page))


@needs_chromium
@pytest.mark.browser
def test_browser_hostile_names_are_shown_not_run(synthetic, chromium):
    root, _, _, _, _ = synthetic
    page = root / "results" / "report.html"
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    assert chromium.evaluate(session, "typeof window.__pwned") == "undefined"
    assert chromium.evaluate(session, "typeof window.__pwned2") == "undefined"
    text = chromium.evaluate(session, "document.body.innerText")
    for hostile in (HOSTILE_CONDITION, HOSTILE_TYPE, HOSTILE_GENE):
        assert hostile in text
    # no element was created from a user string
    assert chromium.evaluate(session, "document.querySelectorAll('script').length") == 1
    assert chromium.evaluate(session, "document.querySelectorAll('img[onerror], b').length") == 0


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow  # full_run: make test-fast (-m "not slow") must not build it
def test_browser_opens_the_workflow_report(full_report, chromium, tmp_path):
    project, _ = full_report
    page = project / "results" / "report.html"
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    headings = chromium.evaluate(
        session, "Array.from(document.querySelectorAll('section > h2')).map(h => h.id || h.parentElement.id)"
    )
    assert headings == list(SECTIONS)
    titles = chromium.evaluate(
        session, "Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent)"
    )
    assert titles == [
        "Run summary",
        "Quality control",
        "Integration",
        "Clustering and annotation",
        "Differential expression",
    ]
    broken = chromium.evaluate(
        session, "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
    )
    assert broken == 0
    png = chromium.screenshot(session)
    assert _pixel_spread(png) > 10, "the screenshot is blank"
    (tmp_path / "report_screenshot.png").write_bytes(chromium.screenshot(session, full_page=True))
    # The table script works: sorting a DE table by padj (numeric) and filtering by a gene name.
    table = chromium.evaluate(session, 'document.querySelector(\'table[id^="de-"][id$="-0"]\').id')
    column = chromium.evaluate(
        session,
        f"Array.from(document.getElementById('{table}').tHead.rows[0].cells).map(c => c.textContent).indexOf('log2FoldChange')",
    )
    values_js = f"Array.from(document.getElementById('{table}').tBodies[0].rows).map(r => parseFloat(r.cells[{column}].getAttribute('data-v')))"
    chromium.evaluate(session, f"document.getElementById('{table}').tHead.rows[0].cells[{column}].click()")
    ascending = chromium.evaluate(session, values_js)
    assert ascending == sorted(ascending)
    chromium.evaluate(session, f"document.getElementById('{table}').tHead.rows[0].cells[{column}].click()")
    assert chromium.evaluate(session, values_js) == sorted(ascending, reverse=True)
    gene = chromium.evaluate(
        session, f"document.getElementById('{table}').tBodies[0].rows[3].cells[0].textContent"
    )
    shown = chromium.evaluate(
        session,
        f"(() => {{ const i = document.querySelector('input[data-table=\"{table}\"]'); i.value = {json.dumps(gene)};"
        " i.dispatchEvent(new Event('input'));"
        f" return Array.from(document.getElementById('{table}').tBodies[0].rows).filter(r => r.style.display !== 'none').map(r => r.cells[0].textContent); }})()",
    )
    assert gene in shown and all(gene.lower() in g.lower() for g in shown)


@pytest.mark.slow
@needs_chromium
@pytest.mark.browser
def test_hostile_condition_and_cell_type_end_to_end(pilot_run, chromium):
    """A whole workflow run whose condition and two marker-table cell types carry markup: the
    shared one-sample pilot (conftest.pilot_run), whose names are report.synthetic's hostile ones."""
    project = pilot_run
    page = project / "results" / "report.html"
    text = page.read_text()
    assert HOSTILE_CONDITION not in text and html.escape(HOSTILE_CONDITION) in text
    assert "Differential expression was not run: no contrast is configured" in text
    session = chromium.open(page)
    assert chromium.errors() == []
    assert _external(chromium.requests(), page) == []
    assert chromium.evaluate(session, "typeof window.__pwned") == "undefined"
    assert chromium.evaluate(session, "typeof window.__pwned2") == "undefined"
    body = chromium.evaluate(session, "document.body.innerText")
    assert HOSTILE_CONDITION in body
    labels = pd.read_csv(project / "results" / "annotation" / "cluster_annotation.tsv", sep="\t")["label"]
    assert {HOSTILE_TYPE, HOSTILE_TYPE_2} & set(labels), "no hostile cell type was assigned"
    for label in set(labels) & {HOSTILE_TYPE, HOSTILE_TYPE_2}:
        assert label in body and html.escape(label) in text
    assert chromium.evaluate(session, "typeof window.__pwned3") == "undefined"
    assert chromium.evaluate(session, "document.querySelectorAll('script').length") == 1
