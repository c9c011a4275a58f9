"""results/cellbrowser/: a static UCSC Cell Browser site that headless Chromium renders offline,
served from localhost: every cell drawn on the UMAP, in the report's cell-type colours."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]] = []

    def log_message(self, format, *args):  # noqa: A002
        pass

    def log_request(self, code="-", size="-"):
        QuietHandler.requests.append((self.path, int(code) if str(code).isdigit() else 0))


@pytest.fixture
def served_results(full_run):
    """full_run's results folder on a localhost HTTP server: (base URL, requests served)."""
    QuietHandler.requests = []
    handler = functools.partial(QuietHandler, directory=str(full_run / "results"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", QuietHandler.requests
    server.shutdown()
    server.server_close()


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        "--virtual-time-budget=20000",
        *args,
        url,
    ]
    try:
        return subprocess.run(command, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish loading {url} within 120 s (the page never settled)")


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow
def test_cell_browser_draws_every_cell_in_the_report_colours(full_run, served_results, tmp_path):
    from PIL import Image

    base, requests = served_results
    site = full_run / "results" / "cellbrowser"
    assert (site / "index.html").is_file() and (site / "sccohort" / "dataset.json").is_file()
    adata = ad.read_h5ad(full_run / "results" / "cohort" / "integrated.h5ad", backed="r")
    # the report's link (cellbrowser/index.html, relative to results/report.html), this dataset
    url = f"{base}/cellbrowser/index.html?ds=sccohort"
    dom = chromium(url, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    text = dom.stdout.decode()
    assert f"{adata.n_obs} visible cells loaded" in text, text[-3000:]
    # the legend shows the cell types in the report's colours (uns["cell_type_colors"]): at least
    # the three largest types' swatches (the legend lists the types by frequency)
    swatches = {
        "#{:02x}{:02x}{:02x}".format(*map(int, rgb))
        for rgb in re.findall(r"background-color: rgb\((\d+), (\d+), (\d+)\)", text)
    }
    colours = dict(zip(adata.obs["cell_type"].cat.categories, adata.uns["cell_type_colors"], strict=True))
    largest = adata.obs["cell_type"].value_counts().index[:3]
    assert {colours[t].lower() for t in largest} <= swatches, (sorted(swatches), colours)
    # and the cells are drawn: many coloured pixels in the plot area (the canvas right of the
    # annotation panel, left of the legend); an empty plot is white to grey
    shot = tmp_path / "cellbrowser.png"
    result = chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-3000:]
    plot = np.asarray(Image.open(shot).convert("RGB"), dtype=int)[80:860, 260:1160]
    coloured = (plot.max(axis=2) - plot.min(axis=2)) > 60
    assert coloured.sum() > 2000, f"{coloured.sum()} coloured pixels in the plot area"
    # everything came from the local server (no other host was asked), and nothing failed but the
    # optional files the browser probes for
    assert requests and all(code in (200, 304, 404) for _, code in requests)
    missing = {path.split("?")[0] for path, code in requests if code == 404}
    assert missing <= {"/cb.conf", "/favicon.ico", "/cellbrowser/cb.conf"}, missing


def test_cell_browser_build_is_offline(tmp_path, monkeypatch):
    """The build asks no network (cbBuild downloads marker databases unless told not to): with
    every socket connection refused, a small site still builds (from relative paths, as the rule
    gives them: cellbrowser resolves them against its own files)."""
    import logging

    import pandas as pd
    import scipy.sparse as sp
    from sccohort.export.cellbrowser import build_cellbrowser
    from sccohort.runtime import write_h5ad

    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    rng = np.random.default_rng(0)
    n = 60
    clusters = pd.Categorical((np.arange(n) % 3).astype(str))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.array(["B", "NK", "T"])[np.arange(n) % 3]),
            "leiden_0.5": clusters,
            "sample": pd.Categorical(["a"] * n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    X = sp.csr_matrix(rng.poisson(1.0, (n, 30)).astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.uns["cell_type_colors"] = np.array(["#1f77b4", "#ff7f0e", "#2ca02c"])
    adata.uns["annotation"] = {"methods": {"markers": "cell_type"}}
    names = np.array([[f"G{(g + i) % 30}" for g in range(3)] for i in range(5)], dtype=object)
    adata.uns["rank_genes_groups"] = {
        "params": {"groupby": "leiden_0.5"},
        "names": pd.DataFrame(names, columns=["0", "1", "2"]).to_records(index=False, column_dtypes="O"),
        "scores": pd.DataFrame(np.ones((5, 3)), columns=["0", "1", "2"]).to_records(index=False),
    }
    write_h5ad(adata, tmp_path / "integrated.h5ad")
    site = tmp_path / "results" / "cellbrowser"
    monkeypatch.chdir(tmp_path)  # relative paths, as the rule passes them
    build_cellbrowser(
        integrated_h5ad="integrated.h5ad",
        output_dir="results/cellbrowser",
        title="test",
        cluster_key="leiden_0.5",
        log=logging.getLogger("test"),
    )
    assert (site / "index.html").is_file() and (site / "sccohort" / "dataset.json").is_file()
    assert not list(site.parent.glob(".cellbrowser-*"))  # the scratch folder is gone
