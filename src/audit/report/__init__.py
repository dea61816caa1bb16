"""Static HTML reports rendered from DuckDB (see :mod:`audit.report.render`).

The package itself imports nothing: ``render_all``, ``render_index`` and ``render_run`` are
loaded from :mod:`audit.report.render` on first use, so that importing a submodule (plots,
records) does not pull the renderer in, and no import cycle runs through the package.
"""

__all__ = ["render_all", "render_index", "render_run"]


def __getattr__(name: str):
    if name in __all__:
        from audit.report import render

        return getattr(render, name)
    raise AttributeError(f"module 'audit.report' has no attribute {name!r}")
