"""sccohort: the importable logic behind the workflow's rules.

One package per stage, matching the rule files: ``qc`` (per-sample load, metrics, doublets, page),
``cohort`` (merge, HVG, embedding, clustering, markers, diagnostics), ``annotate`` (cell types),
``de`` (pseudobulk differential expression) and ``report``. Each package's ``__init__`` exposes one
entry function per rule. Stages never import each other; what several need lives in the shared
modules: ``names`` (columns, keys, file-safe names), ``h5ad`` (partial reading), ``counts``
(count-matrix checks and helpers), ``plotting`` (one palette, scatter and figure save), ``pages``
(Jinja2 HTML), ``runtime`` (the rule wrapper, atomic writes), ``sheet`` and ``config_checks``
(sample sheet and DAG-time checks). See docs/architecture.md.
"""

__version__ = "0.1.0"
