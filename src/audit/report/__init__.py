"""Static HTML reports rendered from DuckDB (see :mod:`audit.report.render`)."""

from audit.report.render import render_all, render_index, render_run  # noqa: F401
