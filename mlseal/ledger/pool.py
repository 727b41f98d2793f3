"""Running the per-entry checks over a stream of entries, in worker processes when it pays.

`check_chunks` cuts the entries into jobs (`jobs`) and yields the `Chunk` of each, in
order. With more than one worker it forks a pool whose processes receive the
verification's `Config` (trust root, parse mode, derived-row mode) through the pool's
``initializer``: each pool's workers hold their own verification's configuration, set
in their own process. Nothing is shared between two verifications, so two threads can
verify two ledgers with two trust files at once. (The configuration is not sent with
each job: keys do not pickle, and a fork hands it over for free.)

Results do not depend on the number of workers.

    >>> from mlseal.ledger.checks import Config
    >>> with check_chunks(iter([]), Config(trust=None), workers=1) as chunks:
    ...     list(chunks)
    []
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterable, Iterator

from mlseal.ledger.checks import Chunk, Config, check_chunk

Job = tuple[int, list[tuple[int, bytes]]]  # (position of the first entry, (storage seq, bytes) of each)

#: the configuration of the verification this worker process serves (set by `_start_worker`
#: in the worker only; the parent process never writes it)
_worker_config: Config | None = None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def workers(requested: int | None, n: int, threshold: int) -> int:
    """Worker processes for a log that has at least ``n`` entries: one below ``threshold``
    (forking costs more than it saves) or where processes cannot be forked."""
    if n < threshold or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if requested is not None:
        return max(1, requested)
    return max(1, cpu_count())


def take(it: Iterator[tuple[int, bytes]], n: int) -> list[tuple[int, bytes]]:
    """The next ``n`` items of ``it`` (fewer at its end)."""
    out = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def jobs(it: Iterator[tuple[int, bytes]], pos: int, size: int, cut: int | None) -> Iterator[Job]:
    """(first position, entries) of ``size`` entries each, also ending one at ``cut``
    (the checkpoint's size, where the root must be taken)."""
    while True:
        n = cut - pos if cut is not None and pos < cut < pos + size else size
        rows = take(it, n)
        if not rows:
            return
        yield pos, rows
        pos += len(rows)


def _start_worker(config: Config) -> None:
    """The pool's initializer: runs in each worker process, before its first job."""
    global _worker_config
    _worker_config = config


def _check_in_worker(job: Job) -> Chunk:
    config = _worker_config
    assert config is not None, "a worker process started without its pool's initializer"
    return check_chunk(job, config)


@contextlib.contextmanager
def check_chunks(todo: Iterator[Job], config: Config, *, workers: int) -> Iterator[Iterable[Chunk]]:
    """The `Chunk` of each job, in order; with ``workers`` > 1 from a pool of forked processes
    (closed on exit). The pool's feeder thread pulls jobs (reading storage) as workers free up."""
    if workers <= 1:
        yield (check_chunk(job, config) for job in todo)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_start_worker, initargs=(config,)) as pool:
        yield pool.imap(_check_in_worker, todo)


__all__ = ["Job", "check_chunks", "cpu_count", "jobs", "take", "workers"]
