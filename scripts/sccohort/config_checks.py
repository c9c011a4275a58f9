"""Checks of the config against the sample sheet, run when the DAG is built."""

from __future__ import annotations

import pandas as pd

from .errors import InputError


def check_config(config: dict, samples: pd.DataFrame) -> None:
    """Raise InputError for config values that contradict each other or the sample sheet."""
    cohort = config.get("cohort", {})
    resolutions = [float(r) for r in cohort.get("leiden_resolutions", [])]
    default = cohort.get("default_resolution")
    if default is not None and resolutions and float(default) not in resolutions:
        raise InputError(
            f"config: cohort.default_resolution {default} is not one of cohort.leiden_resolutions "
            f"{resolutions}; add it to the list or pick one of them."
        )
    for option, keys in (
        ("cohort.batch_keys", cohort.get("batch_keys", [])),
        ("cohort.hvg_batch_key", [cohort["hvg_batch_key"]] if cohort.get("hvg_batch_key") else []),
    ):
        for key in keys:
            if key not in samples.columns:
                raise InputError(
                    f"config: {option} names column {key!r}, which the sample sheet does not have "
                    f"(it has {', '.join(samples.columns)})."
                )
