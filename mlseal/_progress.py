"""Progress on long work, on stderr: only on a terminal, never with ``--quiet`` or ``--json``.

Library code reports work as it does it (`advance`, `expect`); that costs one global
read while no command shows progress. A command shows a bar around its work with
`shown`, and only when `wanted`: stderr is a terminal, and neither ``--quiet`` nor
``--json`` was given (so piped output, CI logs and machine output never carry it).
The bar is drawn by `rich` (bytes/s or entries/s, and the time left once the total
is known), which is imported only when a bar is shown.

    >>> with shown("digest", unit="bytes", enabled=False):
    ...     advance(4096, "bytes")       # nothing drawn: not wanted
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

__all__ = ["advance", "expect", "over_path", "shown", "wanted"]

Unit = Literal["bytes", "entries"]


class _Bar:
    """One rich progress task; calls may come from worker threads."""

    def __init__(self, progress: Any, task: Any, unit: Unit) -> None:
        self._p, self._task, self._lock, self.unit = progress, task, threading.Lock(), unit
        self._total = 0

    def advance(self, n: int) -> None:
        with self._lock:
            self._p.update(self._task, advance=n)

    def expect(self, n: int) -> None:
        with self._lock:
            self._total += n
            self._p.update(self._task, total=self._total)


_current: _Bar | None = None


def advance(n: int, unit: Unit) -> None:
    """Report `n` more `unit` done (bytes hashed, entries verified). A bar counts only its
    own unit: the entries a loader verifies do not move its bytes bar."""
    bar = _current
    if bar is not None and bar.unit == unit:
        bar.advance(n)


def expect(n: int, unit: Unit) -> None:
    """Report `n` more `unit` to do: the bar then shows the time left."""
    bar = _current
    if bar is not None and bar.unit == unit:
        bar.expect(n)


def wanted(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    """Show progress: stderr is a terminal and neither --quiet nor --json was given."""
    stream = stream if stream is not None else sys.stderr
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


@contextmanager
def shown(description: str, *, unit: Unit, enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """Draw a bar for the work done inside the block, when `enabled`; else nothing."""
    global _current
    if not enabled or _current is not None:
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counted: tuple[Any, ...] = ((DownloadColumn(), TransferSpeedColumn()) if unit == "bytes"
                                else (MofNCompleteColumn(), TextColumn("{task.fields[rate]} entries/s")))
    console = Console(file=stream if stream is not None else sys.stderr, force_terminal=True)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), *counted,
                        TimeRemainingColumn(), console=console, transient=True, refresh_per_second=4)
    with progress:
        task = progress.add_task(description, total=None, rate="-")
        bar = _Bar(progress, task, unit)
        if unit == "entries":  # rich's speed column formats bytes; entries/s is computed here
            base_update = bar.advance

            def advance_entries(n: int) -> None:
                base_update(n)
                speed = progress.tasks[0].speed
                progress.update(task, rate=f"{speed:,.0f}" if speed else "-")

            bar.advance = advance_entries  # type: ignore[method-assign]
        _current = bar
        try:
            yield
        finally:
            _current = None


def _size_of(path: str) -> int:
    """Bytes under `path` (a file, or every regular file below a directory); 0 if unknown."""
    import os

    try:
        if not os.path.isdir(path):
            return os.stat(path).st_size
        return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)
    except OSError:
        return 0  # the command itself reports the path's problem


@contextmanager
def over_path(args: argparse.Namespace, description: str, path: str) -> Iterator[None]:
    """A bytes bar for hashing the file or directory at `path`, when `wanted`."""
    show = wanted(args)
    with shown(description, unit="bytes", enabled=show):
        if show:
            expect(_size_of(path), "bytes")
        yield
