"""frontload.analysis: the DuckDB store of every run, SQL, reports and plots."""
