"""sccohort: the importable logic behind the workflow's rules.

One module per stage (io, qc, doublets, cohort, annotate, pseudobulk, report), each working
on AnnData in and AnnData out, so unit tests call the same functions the rules run.
"""

__version__ = "0.1.0"
