"""Sample sheet loading and checks that run when the DAG is built, before any heavy rule.

Every error names the sheet, the row (as the user sees it: line numbers count the header as
line 1), the column and the value, and says what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .errors import InputError

SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_ID_LENGTH = 100
REQUIRED_COLUMNS = ("sample", "path", "condition", "donor")
# Optional columns with a meaning to the workflow; every other column is a covariate.
OVERRIDE_COLUMNS = {
    "min_counts": "qc.min_counts",
    "min_genes": "qc.min_genes",
    "max_genes": "qc.max_genes",
    "max_pct_mt": "qc.max_pct_mt",
    "n_mads": "qc.n_mads_counts and qc.n_mads_genes",
    "n_mads_mt": "qc.n_mads_mt",
    "expected_doublet_rate": "doublets.expected_rate",
}
READER_COLUMNS = ("counts_layer", "genome")
# Columns written by the workflow itself; a sheet column of the same name would be overwritten.
RESERVED_COLUMNS = (
    "total_counts",
    "n_genes_by_counts",
    "pct_counts_mt",
    "doublet_score",
    "predicted_doublet",
    "pass",
    "fail_reason",
    "cell_type",
)


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read the sheet as strings (ids like 01 or 1e5 must not become numbers, NA stays "NA").

    The header is taken as written: pandas would rename a second `condition` column to
    `condition.1` (which then became a covariate of its own), so the header row is read as data
    and check_sample_sheet refuses repeated names. A row with more fields than the header is
    refused too (pandas would silently take the first column as the index). A UTF-8 byte-order
    mark (Excel's "UTF-8 CSV") is dropped.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"Sample sheet {path} is a folder: set 'samples:' in the config to the sheet's TSV file."
        )
    if not path.is_file():
        raise InputError(f"Sample sheet {path} does not exist: create it or set 'samples:' in the config.")
    try:
        table = pd.read_csv(
            path, sep="\t", header=None, dtype=str, keep_default_na=False, comment=None, encoding="utf-8-sig"
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"Sample sheet {path} is empty: it needs a header line and one row per sample.")
    except pd.errors.ParserError as exc:
        raise InputError(
            f"Sample sheet {path} is not a valid tab-separated table ({exc}); check for stray tabs "
            "(every line needs as many fields as the header)."
        )
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Sample sheet {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 "
            "(in Excel: 'Unicode Text' or 'CSV UTF-8', then tab-separated)."
        )
    table = table.fillna("").apply(lambda col: col.str.strip())
    sheet = table.iloc[1:].copy()
    sheet.columns = [str(c) for c in table.iloc[0]]
    sheet.index = sheet.index - 1  # row i is line i + 2 of the file, as check_sample_sheet names it
    # a line of tabs only (an emptied row in a spreadsheet) is no sample
    return sheet[(sheet != "").any(axis=1)]


def check_sample_sheet(sheet: pd.DataFrame, path: str | Path, workdir: str | Path = ".") -> pd.DataFrame:
    """Check the sheet and return it with `batch` filled in and `sample` as index.

    Raises InputError naming the row, column and value at fault.
    """
    path = Path(path)
    if len(sheet.columns) == 1 and "," in sheet.columns[0]:
        raise InputError(f"Sample sheet {path} looks comma-separated: it must be tab-separated (TSV).")
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise InputError(
            f"Sample sheet {path} lacks the required column(s) {', '.join(missing)}; "
            f"it has {', '.join(sheet.columns)}. Add them (see config/README.md)."
        )
    duplicated_columns = list(dict.fromkeys(sheet.columns[sheet.columns.duplicated()]))
    if duplicated_columns:
        raise InputError(
            f"Sample sheet {path} has the column(s) {', '.join(map(repr, duplicated_columns))} more than once; "
            "keep one of each (the workflow would not know which one to use)."
        )
    if "" in sheet.columns:
        position = list(sheet.columns).index("") + 1
        raise InputError(
            f"Sample sheet {path}: column {position} of the header line has no name (a stray tab?); "
            "name the column or delete it."
        )
    clashes = [c for c in sheet.columns if c in RESERVED_COLUMNS]
    if clashes:
        raise InputError(
            f"Sample sheet {path} has column(s) {', '.join(clashes)} whose names the workflow writes itself; rename them."
        )
    if sheet.empty:
        raise InputError(f"Sample sheet {path} has a header but no samples: add one row per sample.")

    def where(i: int, column: str) -> str:
        return f"Sample sheet {path}, line {i + 2}, column '{column}'"

    for i, row in sheet.iterrows():
        for column in REQUIRED_COLUMNS:
            if row[column] == "":
                raise InputError(f"{where(i, column)} is empty: every sample needs a {column}.")
        if not re.match(SAMPLE_ID_PATTERN, row["sample"]):
            raise InputError(
                f"{where(i, 'sample')}: sample id {row['sample']!r} is not allowed; use letters, digits, "
                "'_', '.' and '-' only, starting with a letter or digit (it becomes part of file names)."
            )
        for column, option in OVERRIDE_COLUMNS.items():
            if column in sheet.columns and row[column] != "":
                try:
                    value = float(row[column])
                except ValueError:
                    raise InputError(
                        f"{where(i, column)}: {row[column]!r} is not a number; leave it empty to use {option}."
                    ) from None
                if value < 0 or (column == "expected_doublet_rate" and not 0 < value < 0.5):
                    raise InputError(f"{where(i, column)}: {row[column]!r} is out of range.")
    duplicated = sheet["sample"][sheet["sample"].duplicated(keep=False)]
    if not duplicated.empty:
        lines = ", ".join(str(i + 2) for i in duplicated.index)
        raise InputError(
            f"Sample sheet {path}: sample id {duplicated.iloc[0]!r} appears more than once (lines {lines}); "
            "sample ids must be unique."
        )
    _check_ids_as_file_names(sheet, path)
    for i, row in sheet.iterrows():
        input_path = Path(row["path"])
        if not input_path.is_absolute():
            input_path = Path(workdir) / input_path
        if not input_path.exists():
            raise InputError(
                f"{where(i, 'path')}: input {row['path']!r} of sample {row['sample']!r} does not exist "
                f"(relative paths are relative to {Path(workdir).resolve()}); fix the path."
            )
    _check_distinct_inputs(sheet, path, workdir)
    sheet = sheet.copy()
    if "batch" not in sheet.columns:
        sheet["batch"] = ""
    sheet["batch"] = sheet["batch"].where(sheet["batch"] != "", sheet["sample"])
    return sheet.set_index("sample", drop=False)


def _check_ids_as_file_names(sheet: pd.DataFrame, path: Path) -> None:
    """Sample ids become folder names (results/qc/<sample>/): at most MAX_ID_LENGTH characters, and
    no two that differ only in case (one folder on macOS's and Windows' case-insensitive disks)."""
    for i, sample in sheet["sample"].items():
        if len(sample) > MAX_ID_LENGTH:
            raise InputError(
                f"Sample sheet {path}, line {i + 2}, column 'sample': sample id {sample[:20]!r}... is {len(sample)} "
                f"characters long; use at most {MAX_ID_LENGTH} (it becomes part of file names)."
            )
    folded = sheet["sample"].str.lower()
    clash = folded[folded.duplicated(keep=False)]
    if not clash.empty:
        first = sheet.loc[clash.index, "sample"].tolist()
        raise InputError(
            f"Sample sheet {path}: sample ids {', '.join(map(repr, first))} differ only in upper/lower case; on a "
            "case-insensitive disk (macOS, Windows) their result folders would be one. Rename one of them."
        )


def _check_distinct_inputs(sheet: pd.DataFrame, path: Path, workdir: str | Path) -> None:
    """InputError when two rows read the same input (the same file after resolving `..` and
    symbolic links, with the same reader columns genome and counts_layer): the same cells would
    enter the cohort twice under two sample ids."""
    seen: dict[tuple, int] = {}
    for i, row in sheet.iterrows():
        input_path = Path(row["path"])
        resolved = (input_path if input_path.is_absolute() else Path(workdir) / input_path).resolve()
        key = (resolved, *(row.get(column, "") for column in READER_COLUMNS))
        if key in seen:
            first = seen[key]
            raise InputError(
                f"Sample sheet {path}, lines {first + 2} and {i + 2}: samples {sheet.loc[first, 'sample']!r} and "
                f"{row['sample']!r} read the same input {row['path']!r}; each sample needs its own count "
                "matrix (fix the path, or delete the repeated row)."
            )
        seen[key] = i


def covariate_columns(sheet: pd.DataFrame) -> list[str]:
    """The sheet columns that describe samples (copied into obs): all but path and reader/override columns."""
    skip = {"path", *OVERRIDE_COLUMNS, *READER_COLUMNS}
    return [c for c in sheet.columns if c not in skip]


def sample_override(row: pd.Series | dict, column: str) -> float | None:
    """The per-sample override in `column`, or None when the sheet leaves it empty."""
    value = row.get(column, "") if hasattr(row, "get") else ""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value
