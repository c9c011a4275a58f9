"""Build scaled benchmark cohorts from real cells of the bundled example (example/covid_pbmc).

Every synthetic sample resamples (with replacement) the real cells of one source sample of its
condition: COVID19 samples from the four nCoV_PBMC files, Normal samples from the two
Normal_PBMC files, so the condition difference is real biology. On top of that each sample gets
its own effects, all applied to the integer counts so they stay raw UMI counts:

- cells between real cells: a good synthetic cell mixes a source cell with one of its 10 nearest
  neighbours among the source's good cells (PCA of log-normalised counts), with a uniform
  weight w: w of the first cell's counts and 1 - w of the neighbour's are kept (binomial
  thinning) and added. Resampling a 1,500-cell source to 12,500 cells would otherwise repeat
  each real cell ~8 times; the copies are each other's nearest neighbours, so the kNN graph
  falls apart into ~1,500 cliques (Leiden found 1,238 clusters at resolution 0.25 on such a
  100k cohort) and the benchmark would time an analysis no real cohort needs;
- library size: every count is binomially thinned with p = sample scale x per-cell jitter
  (a sample with scale 0.6 has ~60% of its source's depth);
- a gene-wise batch effect: a random subset of the source's detected genes gets a
  multiplicative factor (log-normal); factors < 1 thin the counts further (binomial), factors
  > 1 add Poisson(count x p x (factor - 1)) counts, so E[new] = count x p x factor;
- low-quality cells: a fraction of cells is drawn from the source cells that fail basic QC
  (low counts or genes, high % mitochondrial), so the QC stage has work to do;
- doublets: a fraction of cells are the sum of two source cells (before thinning), so
  Scrublet has something to find.

The result is deterministic given (seed, sample index, cells per sample): sample k uses its own
random stream, so adding samples does not change the first ones.

Output (a runnable project for the workflow, run from that folder with --snakefile):
    <out>/data/<sample>.h5     Cell Ranger v3 HDF5 (matrix/{data,indices,indptr,shape,barcodes,
                               features/{id,name,feature_type,genome,_all_tag_keys}}), int32 counts
    <out>/config/samples.tsv   sample, path, condition, donor, batch
    <out>/config/config.yaml   the repository's config/config.yaml pointing at that sheet
    <out>/cohort.json          what was built: per-sample source, effects and cell counts

Usage:
    python benchmarks/make_cohort.py small [--out DIR] [--seed 0]
    python benchmarks/make_cohort.py --n-samples 4 --cells-per-sample 1000 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example" / "covid_pbmc"
# Condition of each bundled example sample (config/samples.tsv of the repository).
SOURCES = {
    "COVID19": ("nCoV_PBMC_1", "nCoV_PBMC_15", "nCoV_PBMC_16", "nCoV_PBMC_17"),
    "Normal": ("Normal_PBMC_5", "Normal_PBMC_14"),
}
CONDITIONS = ("COVID19", "Normal")
# name -> (samples, cells per sample)
PRESETS = {
    "small": (8, 2_500),
    "medium": (8, 12_500),
    "large": (16, 25_000),
}
# "Good" source cells (the same rule as tests/conftest.py): the rest are the low-quality pool.
GOOD_MIN_COUNTS = 1000
GOOD_MIN_GENES = 400
GOOD_MAX_PCT_MT = 15.0
CHUNK_CELLS = 5_000


@dataclass
class Effects:
    """Tunable size of the per-sample effects (defaults used by every preset)."""

    library_scale: tuple[float, float] = (0.55, 1.0)  # per-sample thinning probability range
    cell_jitter: tuple[float, float] = (0.85, 1.0)  # per-cell multiplier of the sample's scale
    batch_gene_fraction: float = 0.1  # of the source's genes detected in >= 1% of its cells
    batch_log_sd: float = 0.5  # sd of log(factor)
    batch_factor_range: tuple[float, float] = (0.25, 4.0)
    low_quality_fraction: float = 0.08
    doublet_fraction: float = 0.04


@dataclass
class SampleSpec:
    name: str
    condition: str
    donor: str
    source: str
    index: int
    library_scale: float
    batch_gene_ids: list[str] = field(default_factory=list)
    batch_factors: list[float] = field(default_factory=list)


N_MIX_NEIGHBOURS = 10  # a good synthetic cell mixes a source cell with one of these neighbours


@dataclass
class Source:
    """One bundled sample: cells x genes CSR counts (int32), its good / low-quality cells and, per
    good cell (in the order of `good`), the rows of its N_MIX_NEIGHBOURS nearest good cells."""

    name: str
    counts: sp.csr_matrix
    good: np.ndarray
    low: np.ndarray
    neighbours: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# 10x HDF5 in and out
# --------------------------------------------------------------------------------------------
def read_10x_h5(path: str | Path) -> tuple[sp.csr_matrix, np.ndarray, dict[str, np.ndarray]]:
    """(cells x genes CSR counts, barcodes, features {id, name, feature_type, genome}) of a v3 .h5."""
    import h5py

    with h5py.File(path, "r") as handle:
        group = handle["matrix"]
        n_genes, n_cells = (int(v) for v in group["shape"][:])
        data = group["data"][:]
        if data.size and not np.array_equal(data, np.round(data)):
            raise ValueError(f"{path}: matrix/data holds non-integer values; raw UMI counts are needed.")
        # Cell Ranger stores genes x cells as CSC; the same arrays read as CSR are cells x genes.
        counts = sp.csr_matrix(
            (data.astype(np.int32), group["indices"][:], group["indptr"][:]), shape=(n_cells, n_genes)
        )
        barcodes = group["barcodes"][:]
        features = {key: group["features"][key][:] for key in ("id", "name", "feature_type", "genome")}
    counts.sum_duplicates()
    counts.sort_indices()
    return counts, barcodes, features


def write_10x_h5(path: str | Path, counts: sp.csr_matrix, barcodes, features: dict) -> None:
    """Write cells x genes integer counts as a Cell Ranger v3 .h5 (written to a temp name, then renamed)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = sp.csr_matrix(counts)
    n_cells, n_genes = counts.shape
    tmp = path.with_name(path.name + ".partial")
    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with h5py.File(tmp, "w") as handle:
        handle.attrs["filetype"] = "matrix"
        handle.attrs["version"] = 2
        group = handle.create_group("matrix")
        group.create_dataset("data", data=counts.data.astype(np.int32), **options)
        group.create_dataset("indices", data=counts.indices.astype(np.int64), **options)
        group.create_dataset("indptr", data=counts.indptr.astype(np.int64), **options)
        group.create_dataset("shape", data=np.array([n_genes, n_cells], dtype=np.int32))
        group.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"), **options)
        feats = group.create_group("features")
        for key in ("id", "name", "feature_type", "genome"):
            feats.create_dataset(key, data=np.asarray(features[key], dtype="S"), **options)
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    tmp.replace(path)


def barcodes_for(n_cells: int) -> np.ndarray:
    """n distinct 16-base barcodes with the '-1' GEM-group suffix (cell index written in base 4)."""
    digits = (np.arange(n_cells, dtype=np.int64)[:, None] >> (2 * np.arange(15, -1, -1))) & 3
    letters = np.frombuffer(b"ACGT", dtype="S1")[digits]
    return np.array([b"".join(row) + b"-1" for row in letters], dtype="S18")


# --------------------------------------------------------------------------------------------
# Sources and plan
# --------------------------------------------------------------------------------------------
def classify_cells(counts: sp.csr_matrix, mt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of good cells (pass basic QC) and of the others (the low-quality pool)."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    genes = np.diff(counts.indptr)
    pct_mt = 100 * np.asarray(counts[:, mt].sum(axis=1)).ravel() / np.maximum(totals, 1)
    good = (totals >= GOOD_MIN_COUNTS) & (genes >= GOOD_MIN_GENES) & (pct_mt <= GOOD_MAX_PCT_MT)
    return np.flatnonzero(good), np.flatnonzero(~good)


def good_cell_neighbours(counts: sp.csr_matrix, good: np.ndarray, k: int = N_MIX_NEIGHBOURS) -> np.ndarray:
    """Rows (of `counts`) of each good cell's k nearest good cells: 30 PCs of log1p(CP10k)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.neighbors import NearestNeighbors

    x = sp.csr_matrix(counts[good], dtype=np.float64)
    x = sp.diags(1e4 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1)) @ x
    x.data = np.log1p(x.data)
    x = x[:, np.asarray((x > 0).sum(axis=0)).ravel() >= 3]
    mean = np.asarray(x.mean(axis=0)).ravel()
    dense = x.toarray() - mean  # centred for a PCA; a source has only ~1,500 cells
    pcs = TruncatedSVD(n_components=min(30, min(dense.shape) - 1), random_state=0).fit_transform(dense)
    k = min(k, len(good) - 1)
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(pcs).kneighbors(pcs)
    return good[index[:, 1:]]  # without the cell itself


def load_sources(example: str | Path = EXAMPLE) -> tuple[dict[str, Source], dict[str, np.ndarray]]:
    """The six bundled samples (same 33,538 features in the same order) and their features."""
    sources: dict[str, Source] = {}
    features = None
    for name in (s for condition in CONDITIONS for s in SOURCES[condition]):
        counts, _, feats = read_10x_h5(Path(example) / f"{name}.h5")
        if features is None:
            features = feats
        elif not np.array_equal(features["id"], feats["id"]):
            raise ValueError(f"{name}.h5 lists other features than the first source; cannot pool them.")
        mt = np.char.startswith(feats["name"].astype(str), "MT-")
        good, low = classify_cells(counts, mt)
        sources[name] = Source(
            name=name, counts=counts, good=good, low=low, neighbours=good_cell_neighbours(counts, good)
        )
    return sources, features


def plan_cohort(
    n_samples: int,
    sources: dict[str, Source],
    features: dict[str, np.ndarray],
    seed: int = 0,
    effects: Effects | None = None,
) -> list[SampleSpec]:
    """Sample names, conditions (first half COVID19, second half Normal), sources and effects."""
    effects = effects or Effects()
    if n_samples < 2:
        raise ValueError("A cohort needs at least 2 samples (one per condition).")
    n_covid = (n_samples + 1) // 2
    specs = []
    width = max(2, len(str(n_samples)))
    for k in range(n_samples):
        condition = "COVID19" if k < n_covid else "Normal"
        within = k if condition == "COVID19" else k - n_covid
        source = SOURCES[condition][within % len(SOURCES[condition])]
        rng = np.random.default_rng([seed, k, 0])
        counts = sources[source].counts
        detected = np.bincount(counts.indices, minlength=counts.shape[1])
        candidates = np.flatnonzero(detected >= 0.01 * counts.shape[0])
        n_batch = int(round(effects.batch_gene_fraction * len(candidates)))
        genes = np.sort(rng.choice(candidates, n_batch, replace=False))
        factors = np.exp(rng.normal(0.0, effects.batch_log_sd, n_batch))
        factors = np.clip(factors, *effects.batch_factor_range)
        label = f"S{k + 1:0{width}d}"
        specs.append(
            SampleSpec(
                name=f"{label}_{condition}",
                condition=condition,
                donor=f"donor_{label}",
                source=source,
                index=k,
                library_scale=float(rng.uniform(*effects.library_scale)),
                batch_gene_ids=[g.decode() for g in features["id"][genes]],
                batch_factors=[float(f) for f in factors],
            )
        )
    return specs


# --------------------------------------------------------------------------------------------
# One synthetic sample
# --------------------------------------------------------------------------------------------
def simulate_sample(
    source: Source,
    spec: SampleSpec,
    n_cells: int,
    gene_index: dict[str, int],
    seed: int = 0,
    effects: Effects | None = None,
) -> tuple[sp.csr_matrix, dict]:
    """Counts (cells x genes CSR int32) of one synthetic sample and where its cells came from.

    Returns (counts, info); info has rows (source row of each cell), partners (second source row:
    the mixed-in neighbour of a good cell, the other cell of a doublet, -1 for low-quality cells),
    weights (the share of `rows`' counts kept before thinning: w for good cells, whose partner
    contributes 1 - w; 1 for the others, a doublet's partner contributing 1 as well), kind (0 good,
    1 low quality, 2 doublet) and p_cell (the thinning probability of each cell before the gene
    factors).
    """
    effects = effects or Effects()
    rng = np.random.default_rng([seed, spec.index, 1])
    n_low = int(round(effects.low_quality_fraction * n_cells)) if len(source.low) else 0
    n_doublets = int(round(effects.doublet_fraction * n_cells))
    n_good = n_cells - n_low - n_doublets
    rows = np.concatenate(
        [
            rng.choice(source.good, n_good, replace=True),
            rng.choice(source.low, n_low, replace=True) if n_low else np.empty(0, dtype=np.int64),
            rng.choice(source.good, n_doublets, replace=True),
        ]
    )
    kind = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n_good, n_low, n_doublets])
    partners = np.full(n_cells, -1, dtype=np.int64)
    partners[kind == 2] = rng.choice(source.good, n_doublets, replace=True)
    weights = np.ones(n_cells)
    neighbours = (
        source.neighbours
        if source.neighbours is not None
        else good_cell_neighbours(source.counts, source.good)
    )
    position = np.searchsorted(source.good, rows[:n_good])  # rows of good cells -> index in `good`
    partners[:n_good] = neighbours[position, rng.integers(0, neighbours.shape[1], n_good)]
    weights[:n_good] = rng.uniform(0.0, 1.0, n_good)
    partner_weights = np.where(kind == 0, 1.0 - weights, 1.0)
    order = rng.permutation(n_cells)
    rows, kind, partners = rows[order], kind[order], partners[order]
    weights, partner_weights = weights[order], partner_weights[order]
    p_cell = spec.library_scale * rng.uniform(*effects.cell_jitter, n_cells)

    n_genes = source.counts.shape[1]
    factor = np.ones(n_genes)
    factor[[gene_index[g] for g in spec.batch_gene_ids]] = spec.batch_factors
    down = np.minimum(factor, 1.0)
    up = np.maximum(factor - 1.0, 0.0)

    def thinned(block: sp.csr_matrix, p_row: np.ndarray) -> sp.csr_matrix:
        """Binomial thinning of each row with its p (x the gene's factor <= 1) plus Poisson extra
        counts on boosted genes: E[new] = count x p x factor, integers."""
        block = sp.csr_matrix(block)
        block.sum_duplicates()
        block.sort_indices()
        p = np.repeat(p_row, np.diff(block.indptr))
        values = rng.binomial(block.data.astype(np.int64), p * down[block.indices])
        boosted = np.flatnonzero(up[block.indices] > 0)
        values[boosted] += rng.poisson(block.data[boosted] * p[boosted] * up[block.indices[boosted]])
        out = sp.csr_matrix((values, block.indices, block.indptr), shape=block.shape)
        out.eliminate_zeros()
        return out

    data_parts, index_parts, nnz_per_cell = [], [], []
    for lo in range(0, n_cells, CHUNK_CELLS):
        hi = min(n_cells, lo + CHUNK_CELLS)
        p = p_cell[lo:hi]
        block = thinned(source.counts[rows[lo:hi]], p * weights[lo:hi])
        with_partner = np.flatnonzero(partners[lo:hi] >= 0)
        if len(with_partner):
            # selection matrix: row i of `pick` picks the partner (neighbour or doublet) of cell i
            pick = sp.csr_matrix(
                (np.ones(len(with_partner), dtype=np.int32), (with_partner, partners[lo:hi][with_partner])),
                shape=(hi - lo, source.counts.shape[0]),
            )
            block = sp.csr_matrix(block + thinned(pick @ source.counts, p * partner_weights[lo:hi]))
        block.sum_duplicates()
        block.sort_indices()
        block.eliminate_zeros()
        data_parts.append(block.data.astype(np.int32))
        index_parts.append(block.indices.astype(np.int32))
        nnz_per_cell.append(np.diff(block.indptr))
        del block
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(nnz_per_cell))]).astype(np.int64)
    counts = sp.csr_matrix(
        (np.concatenate(data_parts), np.concatenate(index_parts), indptr), shape=(n_cells, n_genes)
    )
    info = {"rows": rows, "partners": partners, "weights": weights, "kind": kind, "p_cell": p_cell}
    return counts, info


# --------------------------------------------------------------------------------------------
# The whole project
# --------------------------------------------------------------------------------------------
def write_project_config(out: Path, specs: list[SampleSpec]) -> None:
    """config/samples.tsv and config/config.yaml (the repository's config with this sheet)."""
    import pandas as pd
    import yaml

    (out / "config").mkdir(parents=True, exist_ok=True)
    sheet = pd.DataFrame(
        {
            "sample": [s.name for s in specs],
            "path": [f"data/{s.name}.h5" for s in specs],
            "condition": [s.condition for s in specs],
            "donor": [s.donor for s in specs],
            "batch": [s.name for s in specs],
        }
    )
    sheet.to_csv(out / "config" / "samples.tsv", sep="\t", index=False)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samples"] = "config/samples.tsv"
    config["results"] = "results"
    (out / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def build_cohort(
    out: str | Path,
    n_samples: int,
    cells_per_sample: int,
    seed: int = 0,
    effects: Effects | None = None,
    example: str | Path = EXAMPLE,
    preset: str | None = None,
    log=print,
    sources: tuple[dict[str, Source], dict[str, np.ndarray]] | None = None,
) -> dict:
    """Write the project folder (data/, config/, cohort.json); returns the manifest.

    Samples are simulated and written one at a time, so memory is about one sample's matrix.
    `sources`: what load_sources(example) returns, when the caller has it already (reading and
    indexing the six real samples is most of the time of a small cohort).
    """
    effects = effects or Effects()
    out = Path(out)
    started = time.perf_counter()
    sources, features = sources or load_sources(example)
    gene_index = {g.decode(): i for i, g in enumerate(features["id"])}
    specs = plan_cohort(n_samples, sources, features, seed=seed, effects=effects)
    barcodes = barcodes_for(cells_per_sample)
    samples = []
    for spec in specs:
        counts, info = simulate_sample(
            sources[spec.source], spec, cells_per_sample, gene_index, seed=seed, effects=effects
        )
        write_10x_h5(out / "data" / f"{spec.name}.h5", counts, barcodes, features)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        record = asdict(spec)
        record.update(
            n_cells=int(counts.shape[0]),
            n_low_quality=int((info["kind"] == 1).sum()),
            n_doublets=int((info["kind"] == 2).sum()),
            nnz=int(counts.nnz),
            median_counts=float(np.median(totals)),
            file_mb=round((out / "data" / f"{spec.name}.h5").stat().st_size / 1e6, 2),
        )
        samples.append(record)
        log(
            f"{spec.name}: {counts.shape[0]} cells from {spec.source} (scale {spec.library_scale:.2f}, "
            f"median {np.median(totals):.0f} UMIs, {counts.nnz:,} entries)"
        )
        del counts, info
    write_project_config(out, specs)
    manifest = {
        "preset": preset,
        "seed": seed,
        "n_samples": n_samples,
        "cells_per_sample": cells_per_sample,
        "n_cells": n_samples * cells_per_sample,
        "effects": asdict(effects),
        "example": str(example),
        "samples": samples,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "cohort.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def cohort_is_built(out: str | Path, n_samples: int, cells_per_sample: int, seed: int) -> bool:
    """True when `out` holds a complete cohort built with these settings."""
    out = Path(out)
    try:
        manifest = json.loads((out / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    same = (manifest.get("n_samples"), manifest.get("cells_per_sample"), manifest.get("seed")) == (
        n_samples,
        cells_per_sample,
        seed,
    )
    files = [out / "data" / f"{s['name']}.h5" for s in manifest.get("samples", [])]
    return same and all(f.is_file() for f in files) and (out / "config" / "config.yaml").is_file()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset", nargs="?", choices=sorted(PRESETS), help="cohort size preset")
    parser.add_argument("--n-samples", type=int, help="override the preset's number of samples")
    parser.add_argument("--cells-per-sample", type=int, help="override the preset's cells per sample")
    parser.add_argument("--out", type=Path, help="project folder (default benchmarks/work/<preset>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder holds this cohort")
    args = parser.parse_args(argv)
    n_samples, cells = PRESETS.get(args.preset, (None, None))
    n_samples = args.n_samples or n_samples
    cells = args.cells_per_sample or cells
    if not n_samples or not cells:
        parser.error("give a preset or both --n-samples and --cells-per-sample")
    name = args.preset or f"custom_{n_samples}x{cells}"
    out = args.out or REPO / "benchmarks" / "work" / name
    if not args.force and cohort_is_built(out, n_samples, cells, args.seed):
        print(
            f"{out} already holds this cohort ({n_samples} x {cells}, seed {args.seed}); --force rebuilds it."
        )
        return 0
    manifest = build_cohort(out, n_samples, cells, seed=args.seed, preset=args.preset)
    print(
        f"Wrote {manifest['n_cells']:,} cells in {n_samples} samples to {out} in {manifest['build_seconds']} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
