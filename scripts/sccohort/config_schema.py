"""Config validation errors a user can act on, checked when the DAG is built.

Snakemake's `validate` prints jsonschema's whole error: the failing sub-schema dumped as a Python
dict (132 lines for one misspelt key). `check_config_schema` runs the same schema first and, when
the config breaks it, raises one InputError with a few lines per problem: the key path
(`qc.min_gene`), the bad value, the closest valid key ("did you mean qc.min_genes?") or what
the schema allows, and where the options are documented. Only a valid config reaches
Snakemake's `validate`, which then fills in the defaults.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import InputError

OPTIONS_DOC = "config/README.md"
MAX_ERRORS = 10
TYPE_NAMES = {
    "null": "null (empty)",
    "integer": "an integer",
    "number": "a number",
    "string": "a text",
    "boolean": "true or false",
    "array": "a list",
    "object": "a section of options",
}


def load_schema(path: str | Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def check_config_schema(config: Mapping, schema: Mapping, *, config_files: Iterable[str] = ()) -> None:
    """Raise InputError listing every way `config` breaks `schema` (at most MAX_ERRORS)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: key_path(e.absolute_path))
    if not errors:
        return
    files = ", ".join(str(f) for f in config_files) or "the config"
    lines = [f"{files}: {len(errors)} problem{'s' if len(errors) > 1 else ''} with the options:"]
    for error in errors[:MAX_ERRORS]:
        lines.append("  - " + describe_error(error))
    if len(errors) > MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - MAX_ERRORS} more")
    lines.append(f"Fix them in {files}; every option, its type and its default are listed in {OPTIONS_DOC}.")
    raise InputError("\n".join(lines))


def key_path(parts: Iterable) -> str:
    """`qc.min_genes`, `de.contrasts[0].test`: the path of a value as a user writes it."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe_error(error) -> str:
    """One line (or two) for one jsonschema ValidationError."""
    path = list(error.absolute_path)
    where = key_path(path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        return _unknown_keys(error, path, schema)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{key_path([*path, missing])}: missing, it is required."
    value = _show(error.instance)
    allowed = _allowed(error.validator, error.validator_value, schema)
    hint = f" {schema['description']}" if schema.get("description") else ""
    return f"{where}: {value} is not allowed: {allowed}.{hint}"


def _unknown_keys(error, path: list, schema: Mapping) -> str:
    known = list((schema.get("properties") or {}).keys())
    unknown = [k for k in error.instance if k not in known] if isinstance(error.instance, Mapping) else []
    parts = []
    for key in unknown:
        where = key_path([*path, key])
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            parts.append(
                f"{where}: unknown option (value {_show(error.instance[key])}); did you mean {key_path([*path, close[0]])}?"
            )
        else:
            options = ", ".join(known)
            section = key_path(path) if path else "the top level"
            parts.append(f"{where}: unknown option; the options of {section} are: {options}.")
    return "\n  - ".join(parts) or error.message


def _allowed(validator: str, expected, schema: Mapping) -> str:
    if validator == "type":
        types = expected if isinstance(expected, list) else [expected]
        return "it must be " + " or ".join(TYPE_NAMES.get(t, f"a {t}") for t in types)
    if validator == "enum":
        return "it must be one of " + ", ".join(_show(v) for v in expected)
    bounds = {
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMinimum": "more than",
        "exclusiveMaximum": "less than",
        "minItems": "a list of at least",
        "minLength": "a text of at least this many characters:",
    }
    if validator in bounds:
        return f"it must be {bounds[validator]} {expected}"
    if validator == "pattern":
        return f"it must match {expected}"
    return f"schema rule {validator}: {expected}"


def _show(value) -> str:
    if value is None:
        return "null (empty)"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_config_file(path: str | Path) -> None:
    """InputError for a config file that does not read as written: a YAML syntax error (file, line,
    column and what is wrong), a file that is not a mapping of options, or a key given twice in
    one section (YAML's loaders silently keep the last one, so one of two settings is ignored).
    Run before Snakemake reads the file, whose own message names neither file nor line."""
    import yaml

    path = Path(path)

    class ConfigLoader(yaml.SafeLoader):
        """SafeLoader that refuses repeated keys."""

    def mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merges, it repeats nothing
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(
                    f"{path}, line {line}: the option {key!r} is given twice in one section (also on line "
                    f"{seen[key]}); YAML would silently keep only the second. Delete one of them."
                )
            seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(
            f"{path}{where}: not valid YAML ({problem}). Fix that line: options are 'key: value' lines, "
            "sections indented with spaces (not tabs), text with ':' or '#' in quotes."
        ) from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
    if content is not None and not isinstance(content, dict):
        raise InputError(
            f"{path} holds a {type(content).__name__}, not a mapping of options ('key: value' lines at the "
            "top level, as in the shipped config/config.yaml); remove any leading '- '."
        )
