"""Progress of long work, shown by the CLI with rich and silent everywhere else.

Stages call :func:`step` and :func:`track`; the CLI installs a reporter with
:func:`use_console`. Library code never prints.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_console = None


def use_console(console) -> None:
    """Show progress on a rich ``Console`` (None: silent)."""
    global _console
    _console = console


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    if _console is None:
        yield
        return
    start = time.monotonic()
    with _console.status(f"[bold]{label}[/]..."):
        yield
    _console.log(f"{label} done in {time.monotonic() - start:.1f} s")


def track(items: Iterable[T], label: str) -> Iterator[T]:
    if _console is None:
        yield from items
        return
    from rich.progress import track as rich_track

    items = list(items)
    start = time.monotonic()
    yield from rich_track(items, description=label, console=_console, transient=True)
    _console.log(f"{label} done in {time.monotonic() - start:.1f} s")


def bar(items: Iterable[T], total: int | None = None, label: str = "working") -> Iterator[T]:
    """A progress bar over ``items`` (``total`` when ``items`` has no length)."""
    if _console is None:
        yield from items
        return
    from rich.progress import Progress

    with Progress(console=_console, transient=True) as prog:
        task = prog.add_task(label, total=total)
        for item in items:
            yield item
            prog.advance(task)
