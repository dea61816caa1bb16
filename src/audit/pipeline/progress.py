"""Progress of long work, shown by the CLI with rich and silent everywhere else.

Stages call :func:`step`, :func:`track`, :func:`bar` and :func:`note`; the CLI installs a
reporter with :func:`use_console`. Library code never prints.

On a terminal, long loops show a rich progress bar with the time left. Where the output is
not a terminal (a log file, a CI job, a scheduler's worker), bars cannot redraw, so a loop
writes a line every :data:`LOG_EVERY` seconds with its count, share and time left, and a
last one when it ends; steps write a line when they start and when they end.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_console = None
LOG_EVERY = 10.0  # seconds between progress lines when the output is not a terminal


def use_console(console) -> None:
    """Show progress on a rich ``Console`` (None: silent)."""
    global _console
    _console = console


def _interactive() -> bool:
    return bool(_console is not None and _console.is_terminal)


def note(text: str | None) -> None:
    """A line of what the run is doing or will do (nothing without a console)."""
    if _console is not None and text:
        _console.log(text, markup=False, highlight=False)


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    if _console is None:
        yield
        return
    start = time.monotonic()
    if _interactive():
        with _console.status(f"[bold]{label}[/]..."):
            yield
    else:
        _console.log(f"{label}...", markup=False, highlight=False)
        yield
    _console.log(f"{label} done in {time.monotonic() - start:.1f} s", markup=False)


def track(items: Iterable[T], label: str) -> Iterator[T]:
    """Each of ``items``, with progress (a bar, or log lines)."""
    if _console is None:
        yield from items
        return
    items = list(items)
    start = time.monotonic()
    yield from bar(items, len(items), label)
    _console.log(f"{label} done in {time.monotonic() - start:.1f} s", markup=False)


def bar(items: Iterable[T], total: int | None = None, label: str = "working") -> Iterator[T]:
    """A progress bar over ``items`` (``total`` when ``items`` has no length), with the time
    left; periodic log lines where the output is not a terminal."""
    if _console is None:
        yield from items
        return
    if not _interactive():
        yield from _logged(items, total, label)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=True) as prog:
        task = prog.add_task(label, total=total)
        for item in items:
            yield item
            prog.advance(task)


def _logged(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """``items`` with a log line every :data:`LOG_EVERY` seconds (count, share and, from the
    rate so far, the time left) and a last one when any was written: a loop shorter than
    that stays quiet."""
    start = last = time.monotonic()
    done, said = 0, False
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY:
            last, said = now, True
            _console.log(progress_line(label, done, total, now - start), markup=False)
    if said:
        _console.log(progress_line(label, done, total, time.monotonic() - start), markup=False)


def progress_line(label: str, done: int, total: int | None, elapsed: float) -> str:
    """``label: 12/40 (30%), 8 s so far, about 19 s left`` (what is known of it)."""
    if total:
        share = f" ({done / total:.0%})"
        left = (total - done) * elapsed / done if done else None
        rest = f", about {left:.0f} s left" if left is not None and done < total else ""
        return f"{label}: {done}/{total}{share}, {elapsed:.0f} s so far{rest}"
    return f"{label}: {done} done, {elapsed:.0f} s so far"
