# The config files as written, checked before Snakemake reads them (the Snakefile includes this
# file before its configfile: directive): a YAML syntax error named with its file, line and
# column, a file that is not a mapping of options, and an option given twice in one section,
# which YAML would otherwise resolve silently by keeping the last. Snakemake's own messages name
# neither the file nor the line. Files given with --configfile were read by Snakemake already;
# their repeated options are still found here.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(
    0, str(Path(str(workflow.current_basedir)).resolve().parents[1] / "scripts")
)

from sccohort import config_schema  # noqa: E402
from sccohort.errors import InputError  # noqa: E402

try:
    for _config_file in [*(workflow.overwrite_configfiles or []), "config/config.yaml"]:
        if Path(_config_file).is_file():
            config_schema.check_config_file(_config_file)
except InputError as error:
    raise WorkflowError(f"sccohort: {error}") from None
