"""The workflow's rules as Snakemake itself parses them (for the deployment and SLURM tests).

load_rules() builds the workflow with the Snakemake API (no DAG, no jobs) and returns one
RuleFacts per rule: whether it runs a job, where its conda env and script are, what it
declares for threads and resources. Written generically: it covers whatever rules the stage
files define at the time the tests run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class RuleFacts:
    name: str
    snakefile: Path
    norun: bool  # no script/shell/run: a target-only rule (e.g. all), never a job
    local: bool  # listed in localrules / localrule: True
    conda_env: Path | None
    script: Path | None
    threads: object  # as declared (None when the rule does not declare threads)
    resources: dict = field(default_factory=dict)  # declared resources (int, str or callable)

    @property
    def runs_job(self) -> bool:
        """A job that an executor (SLURM) would submit."""
        return not self.norun and not self.local


@contextlib.contextmanager
def _keep_cwd():
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


def load_rules(workdir: Path = REPO, snakefile: Path = REPO / "Snakefile") -> list[RuleFacts]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    facts = []
    with _keep_cwd(), SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(), snakefile=Path(snakefile), workdir=Path(workdir)
        )
        workflow = workflow_api._workflow  # the parsed rules; no public accessor in Snakemake 9
        localrules = set(getattr(workflow, "_localrules", set()))
        for rule in workflow.rules:
            rule_dir = Path(rule.snakefile).parent
            conda_env = rule.conda_env
            script = rule.script if rule.is_script else None
            resources = {
                name: value
                for name, value in (getattr(rule.ruleinfo, "resources", None) or ((), {}))[1].items()
            }
            facts.append(
                RuleFacts(
                    name=rule.name,
                    snakefile=Path(rule.snakefile),
                    norun=bool(rule.norun),
                    local=rule.name in localrules,
                    conda_env=(rule_dir / str(conda_env)).resolve() if conda_env else None,
                    script=(rule_dir / str(script)).resolve() if script else None,
                    threads=rule.ruleinfo.threads,
                    resources=resources,
                )
            )
    return facts
