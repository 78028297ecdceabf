"""frontload.analysis: the DuckDB store of every run, SQL, reports and plots.

``ingest(workspace)`` loads a workspace's run folders into ``workspace/frontload.duckdb``;
``connect(workspace)`` opens it read-only; ``query(workspace, sql)`` returns a polars DataFrame (``queries``: one per statement);
``report(workspace)`` prints the ablation and persistence tables and writes the plots. DuckDB,
polars and matplotlib are imported only when these run.
"""

from frontload.analysis.ingest import IngestError, IngestReport, ingest
from frontload.analysis.report import ReportPaths, report
from frontload.analysis.store import StoreError, connect, queries, query

__all__ = [
    "IngestError",
    "IngestReport",
    "ReportPaths",
    "StoreError",
    "connect",
    "ingest",
    "queries",
    "query",
    "report",
]
