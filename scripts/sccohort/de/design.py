"""Design formulas: their variables, their design matrix over pseudobulk samples, why one cannot
be fitted, and the checks of the `de:` config block against the sample sheet.

check_de_config runs when the DAG is built (workflow/rules/de.smk): everything that can be known
before a single cell is read is checked there, so a typo in a contrast fails in a second instead
of after QC, integration and annotation. design_problem runs again per group before testing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from ..names import RESERVED_CONTRAST_NAMES, safe_name

# Sheet columns that are not sample descriptions and cannot enter a design.
NON_DESIGN_COLUMNS = ("path", "counts_layer", "genome")


def design_variables(design: str) -> list[str]:
    """The variables (sheet columns) a design formula uses, in formula order; InputError when it does not parse."""
    from formulaic import Formula

    if not isinstance(design, str) or not design.strip().startswith("~"):
        raise InputError(
            f"config: de.design {design!r} must be a formula starting with '~', e.g. '~ condition'."
        )
    try:
        formula = Formula(design)
        variables = formula.required_variables
        terms = [str(t) for t in formula]
    except Exception as exc:  # formulaic raises several syntax error types
        raise InputError(f"config: de.design {design!r} is not a valid formula ({exc}).") from None
    ordered = sorted(
        variables, key=lambda v: min((i for i, t in enumerate(terms) if v in t), default=len(terms))
    )
    return ordered


def design_matrix(metadata: pd.DataFrame, *, design: str, factor: str, test: str, reference: str):
    """The design matrix of `design` over `metadata` (one row per sample), all variables as
    categorical factors.

    The contrast factor's levels are ordered reference, test, others, so its coefficient for
    the contrast is named f"{factor}[T.{test}]". Other variables keep sorted level order.
    Levels absent from `metadata` get no column.
    """
    from formulaic import model_matrix

    data = pd.DataFrame(index=metadata.index)
    for variable in design_variables(design):
        values = metadata[variable].astype(str)
        levels = sorted(values.unique())
        if variable == factor:
            levels = [reference, test] + [v for v in levels if v not in (reference, test)]
            levels = [v for v in levels if v in set(values)]
        data[variable] = pd.Categorical(values, categories=levels)
    return model_matrix(design, data)


def design_problem(
    metadata: pd.DataFrame, *, design: str, factor: str, test: str, reference: str
) -> str | None:
    """Why `design` cannot be fitted on these samples (rows of metadata), or None when it can.

    Non-estimable: the design matrix is rank-deficient (a covariate confounded with the
    contrast factor or with another covariate; the confounded columns are named), the
    contrast coefficient is not estimable, or no residual degree of freedom is left for the
    dispersion estimates (as many coefficients as samples).
    """
    matrix = design_matrix(metadata, design=design, factor=factor, test=test, reference=reference)
    values = np.asarray(matrix, dtype=float)
    columns = list(matrix.columns)
    n_samples, n_columns = values.shape
    coefficient = f"{factor}[T.{test}]"
    if coefficient not in columns:
        return (
            f"design {design!r}: level {test!r} of {factor!r} has no coefficient (missing in these samples)"
        )
    rank = np.linalg.matrix_rank(values)
    if rank < n_columns:
        # A column is involved in a linear dependency when dropping it does not lower the rank.
        involved = [
            columns[j]
            for j in range(n_columns)
            if np.linalg.matrix_rank(np.delete(values, j, axis=1)) == rank
        ]
        what = "the contrast factor is confounded" if coefficient in involved else "columns are confounded"
        return (
            f"design {design!r} is not estimable: design matrix rank {rank} < {n_columns} columns; "
            f"{what} ({', '.join(involved)} are linearly dependent over samples "
            f"{', '.join(map(str, metadata.index))}); drop or merge the confounded covariate"
        )
    if n_samples - n_columns < 1:
        return (
            f"design {design!r} leaves no residual degree of freedom ({n_samples} samples, {n_columns} "
            "coefficients); dispersions cannot be estimated: use a simpler design or more samples"
        )
    return None


def check_de_config(config: dict, samples: pd.DataFrame) -> list[dict]:
    """Check the `de:` block against the sample sheet; return the contrasts, normalised.

    Each returned contrast is a dict with name, factor, test, reference (strings); an empty
    name becomes "<test>_vs_<reference>" (made file-name safe). Raises InputError naming the
    option, column and value when: a design variable or contrast factor is not a sheet
    column; a contrast factor is not in the design; a level is not in the sheet; test equals
    reference; a level has fewer than de.min_replicates samples in the sheet; two contrasts
    share a name; the design is not estimable even with every sample of the sheet.
    """
    de = config.get("de", {}) or {}
    sheet_path = config.get("samples", "the sample sheet")
    design = de.get("design", "~ condition")
    min_replicates = int(de.get("min_replicates", 2))
    columns = [c for c in samples.columns if c not in NON_DESIGN_COLUMNS]

    variables = design_variables(design)
    for variable in variables:
        if variable not in columns:
            raise InputError(
                f"config: de.design {design!r} uses {variable!r}, which is not a column of the sample sheet "
                f"{sheet_path} (it has {', '.join(columns)}); add the column or fix the formula."
            )

    contrasts: list[dict] = []
    names: dict[str, int] = {}
    for i, contrast in enumerate(de.get("contrasts", []) or []):
        checked = _check_contrast(
            contrast,
            samples,
            where=f"config: de.contrasts[{i}]",
            design=design,
            variables=variables,
            columns=columns,
            min_replicates=min_replicates,
            sheet_path=sheet_path,
        )
        name = checked["name"]
        if name in names:
            raise InputError(
                f"config: de.contrasts[{i}]: contrast name {name!r} is already used by "
                f"de.contrasts[{names[name]}]; give each contrast a distinct name."
            )
        names[name] = i
        problem = design_problem(
            samples,
            design=design,
            factor=checked["factor"],
            test=checked["test"],
            reference=checked["reference"],
        )
        if problem:
            raise InputError(
                f"config: de.contrasts[{i}] ({name}): with all {len(samples)} samples of {sheet_path}, "
                f"the {problem}."
            )
        contrasts.append(checked)
    return contrasts


def _check_contrast(
    contrast: dict,
    samples: pd.DataFrame,
    *,
    where: str,
    design: str,
    variables: list[str],
    columns: list[str],
    min_replicates: int,
    sheet_path: str,
) -> dict:
    """One contrast of de.contrasts checked against the sheet on its own (factor, levels,
    replicates, name); returns it normalised (name, factor, test, reference)."""
    factor = str(contrast.get("factor", "condition"))
    test = str(contrast.get("test", ""))
    reference = str(contrast.get("reference", ""))
    if factor not in columns:
        raise InputError(
            f"{where}: factor {factor!r} is not a column of the sample sheet {sheet_path} "
            f"(it has {', '.join(columns)})."
        )
    if factor not in variables:
        raise InputError(
            f"{where}: factor {factor!r} is not in de.design {design!r}; add it to the design "
            f"(e.g. '{design.rstrip()} + {factor}')."
        )
    counts = samples[factor].astype(str).value_counts()
    for role, level in (("test", test), ("reference", reference)):
        if level == "":
            raise InputError(f"{where}: {role} level is empty; name a value of column {factor!r}.")
        if level not in counts.index:
            raise InputError(
                f"{where}: {role} level {level!r} is not a value of column {factor!r} in the sample "
                f"sheet {sheet_path} (values: {', '.join(sorted(counts.index))})."
            )
    if test == reference:
        raise InputError(f"{where}: test and reference are both {test!r}; a contrast compares two levels.")
    for level in (test, reference):
        if counts[level] < min_replicates:
            raise InputError(
                f"{where}: level {level!r} of {factor!r} has {counts[level]} sample(s) in {sheet_path}, "
                f"fewer than de.min_replicates = {min_replicates}; add replicates or lower de.min_replicates."
            )
    name = str(contrast.get("name") or "") or f"{safe_name(test)}_vs_{safe_name(reference)}"
    if name.lower() in RESERVED_CONTRAST_NAMES:
        raise InputError(
            f"{where}: contrast name {name!r} is reserved (results/de/{name} holds other outputs)."
        )
    return {"name": name, "factor": factor, "test": test, "reference": reference}
