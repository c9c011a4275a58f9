"""The per-sample QC page: its sections, tables and figures, every value from the data escaped."""

from __future__ import annotations

import re

import pandas as pd
from sccohort.qc import page

URI = "data:image/png;base64,iVBORw0KGgo="


def sample_outputs():
    cells = pd.DataFrame(
        {
            "barcode": ["a", "b", "c", "d"],
            "n_genes_by_counts": [500, 700, 40, 900],
            "pct_counts_mt": [2.0, 4.0, 30.0, 3.0],
            "pass": [True, True, False, False],
            "fail_reason": ["", "", "low_genes;high_pct_mt", "doublet"],
        }
    )
    thresholds = {
        "qc": {
            "total_counts": {"lower": 500.0, "lower_source": "config qc.min_counts", "upper": None},
            "n_genes_by_counts": {"lower": 200.0, "lower_source": "adaptive", "upper": 5000.0},
            "pct_counts_mt": {"skipped": "no <mito> genes", "lower": None, "upper": None},
        },
        "doublets": {"threshold": 0.31, "threshold_source": "automatic", "expected_rate": 0.0032},
        "status": {"n_cells_input": 4, "n_cells_after_qc": 3, "n_doublets": 1, "n_cells_kept": 2},
        "notes": ["<b>note</b> & more"],
    }
    return cells, thresholds


def test_page_has_the_sections_tables_and_figures():
    cells, thresholds = sample_outputs()
    figures = {"distributions": URI, "doublets": URI, "removed": URI}
    html = page.render_sample_page(cells, thresholds, sample="S<1>", figures=figures)
    assert "<title>QC of sample S&lt;1&gt;</title>" in html and "S<1>" not in html
    assert [m for m in re.findall(r'<section id="(\w+)"><h2>([^<]+)</h2>', html)] == [
        ("summary", "Summary"),
        ("thresholds", "Thresholds applied"),
        ("doublets", "Doublets"),
    ]
    assert re.findall(r'<a href="#(\w+)">', html) == ["summary", "thresholds", "doublets"]
    assert html.count(f'src="{URI}"') == 3
    assert "<figcaption>Grey: all barcodes; green: kept; red lines: the thresholds." in html
    assert '<div class="warn">&lt;b&gt;note&lt;/b&gt; &amp; more</div>' in html
    assert "<td>no &lt;mito&gt; genes</td>" in html
    assert '<td>cells kept</td><td class="num" data-v="2.0">2</td>' in html
    assert "<td>median genes (kept)</td>" in html and ">600<" in html
    assert "<td>low_genes</td>" in html and "<td>doublet</td>" in html
    assert "<script" not in html and 'class="sortable"' not in html


def test_removal_counts_count_each_reason():
    cells, _ = sample_outputs()
    counts = page.removal_counts(cells)
    assert counts.set_index("category")["cells"].to_dict() == {
        "kept": 2,
        "low_genes": 1,
        "high_pct_mt": 1,
        "doublet": 1,
    }
