"""Rule multiqc_run: MultiQC over the custom-content files, offline (no version check, no AI)."""

from sccohort.runtime import run_rule


def main(smk, log):
    import subprocess
    from pathlib import Path

    from sccohort import multiqc

    output = Path(smk.output.html)
    command = multiqc.multiqc_command(list(smk.input), output.parent, output.name)
    log.info("Running: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    log.info("MultiQC output:\n%s%s", result.stdout, result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"MultiQC failed with exit code {result.returncode}; see the log above.")
    if not output.is_file():
        raise RuntimeError(f"MultiQC finished but wrote no {output}.")


run_rule(main, snakemake)  # noqa: F821
