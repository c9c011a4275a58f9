"""Rule qc_report_sample: the self-contained QC page of one sample and its figures."""

from sccohort.runtime import run_rule


def main(smk, log):
    import json

    import matplotlib.pyplot as plt
    import pandas as pd
    from sccohort import html, qc_report
    from sccohort.runtime import atomic_path

    cells = pd.read_csv(smk.input.cells, sep="\t")
    thresholds = json.loads(open(smk.input.thresholds).read())
    figures = {
        "distributions": qc_report.plot_distributions(cells, thresholds["qc"]),
        "doublets": qc_report.plot_doublet_scores(cells, thresholds["doublets"]),
        "removed": qc_report.plot_removed(cells),
    }
    uris = {}
    for name, fig in figures.items():
        with atomic_path(smk.output[name]) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        uris[name] = html.file_to_data_uri(smk.output[name])
        plt.close(fig)
    with atomic_path(smk.output.html) as tmp:
        tmp.write_text(qc_report.render_sample_page(smk.wildcards.sample, cells, thresholds, uris))
    log.info("wrote %s", smk.output.html)


run_rule(main, snakemake)  # noqa: F821
