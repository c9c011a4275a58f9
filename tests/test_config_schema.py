"""Config errors as good as the sheet's: key path, bad value, closest valid key, what to do, in a few lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sccohort import config_schema
from sccohort.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = config_schema.load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def shipped_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def message_for(edit) -> str:
    config = shipped_config()
    edit(config)
    with pytest.raises(InputError) as caught:
        config_schema.check_config_schema(config, SCHEMA, config_files=["config/config.yaml"])
    return str(caught.value)


def test_shipped_config_passes():
    config_schema.check_config_schema(shipped_config(), SCHEMA)


def test_misspelt_key_names_path_value_and_closest_key_in_a_few_lines():
    message = message_for(lambda c: c["qc"].update(min_gene=200))
    assert "qc.min_gene: unknown option (value 200); did you mean qc.min_genes?" in message
    assert "config/config.yaml" in message and "config/README.md" in message
    assert len(message.splitlines()) <= 4  # not jsonschema's 132-line dump of the sub-schema
    assert "additionalProperties" not in message and "{'type'" not in message


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c["qc"].update(min_counts="abc"), ["qc.min_counts: 'abc'", "an integer or null"]),
        (lambda c: c["qc"].update(failed_sample_policy="dorp"), ["'dorp'", "one of 'fail', 'drop'"]),
        (lambda c: c["cohort"].update(n_pcs=-1), ["cohort.n_pcs: -1", "at least"]),
        (
            lambda c: c["de"]["contrasts"][0].update(tset="x"),
            ["de.contrasts[0].tset", "de.contrasts[0].test?"],
        ),
        (lambda c: c.update(qcc={}), ["qcc: unknown option", "did you mean qc?"]),
        (lambda c: c["qc"].update(zzz=1), ["qc.zzz: unknown option; the options of qc are: mt_prefix"]),
    ],
)
def test_each_kind_of_error_names_key_and_rule(edit, says):
    message = message_for(edit)
    missing = [text for text in says if text not in message]
    assert not missing, message


def test_several_errors_are_listed_together():
    def edit(config):
        config["qc"]["min_gene"] = 1
        config["seed"] = -3

    message = message_for(edit)
    assert message.startswith("config/config.yaml: 2 problems")
    assert "qc.min_gene" in message and "seed: -3" in message
