"""Links from results/report.html to the files behind it: every full table and figure file a
stage wrote, as paths relative to the report's folder (the results folder can be moved or shared
as a whole)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
TABLE_SUFFIXES = (".tsv", ".tsv.gz", ".csv", ".json")


def relative_href(path, report_dir: Path) -> str | None:
    """`path` relative to `report_dir`, URL-quoted part by part; None when the file is absent."""
    if not path or not Path(path).exists():
        return None
    rel = os.path.relpath(Path(path).resolve(), Path(report_dir).resolve()).replace(os.sep, "/")
    return "/".join(quote(part) for part in rel.split("/"))


def file_link(path, report_dir: Path, text: str | None = None) -> dict | None:
    """{"href", "text"} for the files macro (report_macros.html.j2), or None when absent."""
    href = relative_href(path, report_dir)
    return None if href is None else {"href": href, "text": text or Path(path).name}


def file_links(paths: Iterable, report_dir: Path) -> list[dict]:
    """Links to the files among `paths` that exist (each once, in order)."""
    seen, links = set(), []
    for path in paths:
        if path and str(path) not in seen:
            seen.add(str(path))
            found = file_link(path, report_dir)
            if found:
                links.append(found)
    return links


def folder_files(folder, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of `folder` (not its subfolders) whose names end in one of `suffixes`, sorted."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffixes))
