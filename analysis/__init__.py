"""frontload.analysis: the DuckDB store of every run, SQL, reports and plots.

``ingest(workspace)`` loads a workspace's run folders into ``workspace/frontload.duckdb``;
``connect(workspace)`` opens it read-only; ``query(workspace, sql)`` returns a polars DataFrame;
``report(workspace)`` prints the ablation and persistence tables and writes the plots.
"""

from frontload.analysis.ingest import IngestReport, ingest
from frontload.analysis.store import connect, query


def report(workspace, **kwargs):
    """Ingest what is new, print the tables and write the plots (see :func:`frontload.analysis.report.report`)."""
    from frontload.analysis.report import report as _report

    return _report(workspace, **kwargs)


__all__ = ["IngestReport", "connect", "ingest", "query", "report"]
