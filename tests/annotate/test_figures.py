"""The annotation figures (sccohort.annotate.figures)."""

from __future__ import annotations

from annotate.annotation_data import KEY, MARKERS
from sccohort.annotate.composition import composition
from sccohort.annotate.figures import dotplot_genes, plot_composition, plot_marker_dotplot, plot_umap_labels
from sccohort.annotate.marker_method import annotate_markers
from sccohort.names import UNKNOWN


def test_figures_are_written(kang_query, markers, tmp_path):
    adata = kang_query.copy()
    annotate_markers(adata, markers, cluster_key=KEY, marker_path=MARKERS)
    adata.obs["sample"] = adata.obs["sample_id"]
    per_sample, per_condition = composition(adata.obs)
    paths = {name: tmp_path / f"{name}.png" for name in ("umap", "dotplot", "bars")}
    plot_umap_labels(adata, keys=["cell_type"], path=paths["umap"], basis="X_pca")
    plot_marker_dotplot(adata, markers, path=paths["dotplot"])
    plot_composition(per_sample, per_condition, path=paths["bars"])
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    genes = dotplot_genes(adata, markers)
    assigned = set(adata.obs["cell_type"].astype(str)) - {UNKNOWN}
    assert set(genes) <= assigned
    flat = [g for v in genes.values() for g in v]
    assert len(flat) == len(set(flat))
