"""Lazy re-exports for the subpackages' ``__init__``: ``from audit.survival import
survival_analysis`` works, yet importing one submodule never imports its siblings (so a
package's ``__init__`` adds no import edge, and no cycle, between concerns)."""

from __future__ import annotations

import importlib


def exports(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package`` whose ``names`` map each exported name to
    the submodule that defines it."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
