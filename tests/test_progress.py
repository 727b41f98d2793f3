"""Progress on long work: on stderr, only on a terminal, off with --quiet, never with --json or pipes.

The commands run as a user runs them: once with stderr on a pseudo-terminal (progress
appears there), and with pipes, ``--json`` or ``--quiet`` (nothing but the command's
own output).
"""

from __future__ import annotations

import argparse
import io
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from mlseal import _progress
from tests.fixtures_admission import AdmissionWorld, make_world

CLI = [sys.executable, "-m", "mlseal.cli"]


def run_on_pty(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) with stderr on a pseudo-terminal and stdout a pipe."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    seen = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.stdout is not None
    out = p.stdout.read().decode()
    p.stdout.close()
    return p.wait(timeout=60), out, seen.decode(errors="replace")


def run_piped(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("progress") / "model.bin"
    f.write_bytes(os.urandom(1024) * 8 * 1024)  # 8 MiB
    return f


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AdmissionWorld:
    return make_world(tmp_path_factory.mktemp("progress-ledger"))


def test_digest_shows_progress_on_a_terminal(big: Path) -> None:
    code, out, err = run_on_pty(["digest", str(big)])
    assert code == 0 and out.endswith(f"  {big}\n")
    assert "digest" in err and "MB" in err, err  # the bar: description, bytes done/total


@pytest.mark.parametrize("flag", ["--json", "--quiet"])
def test_digest_shows_none_with_json_or_quiet(big: Path, flag: str) -> None:
    args = ["--quiet", "digest", str(big)] if flag == "--quiet" else ["digest", str(big), "--json"]
    code, out, err = run_on_pty(args)
    assert code == 0 and out
    assert err == "", err


def test_digest_shows_none_when_piped(big: Path) -> None:
    r = run_piped(["digest", str(big)])
    assert r.returncode == 0 and r.stderr == ""


def test_ledger_verify_shows_entries_on_a_terminal(world: AdmissionWorld) -> None:
    trust = str(world.dir / "trust.yaml")
    code, out, err = run_on_pty(["ledger", "verify", "--ledger", world.ledger_url, "--trust", trust])
    assert code == 1  # the world holds tampered entries on purpose: the verdict is unchanged
    assert "verifying the ledger" in err and "entries/s" in err, err
    code, out, err = run_on_pty(["ledger", "verify", "--ledger", world.ledger_url, "--trust", trust, "--json"])
    assert "verifying the ledger" not in err and "\x1b" not in err
    assert out.startswith("{")
    r = run_piped(["ledger", "verify", "--ledger", world.ledger_url, "--trust", trust])
    assert "verifying the ledger" not in r.stderr and "\x1b" not in r.stderr


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_counts_only_its_own_unit() -> None:
    stream = _Tty()
    with _progress.shown("fetch", unit="bytes", enabled=True, stream=stream):
        _progress.expect(10, "entries")
        _progress.advance(5, "entries")
        bar = _progress._current
        assert bar is not None
        task = bar._p.tasks[0]
        assert task.total is None and task.completed == 0
        _progress.expect(100, "bytes")
        _progress.advance(40, "bytes")
        assert task.total == 100 and task.completed == 40
    assert _progress._current is None
    assert "fetch" in stream.getvalue()


def test_wanted_needs_a_terminal_and_no_quiet_or_json() -> None:
    ns = argparse.Namespace
    assert _progress.wanted(ns(quiet=False, json=False), _Tty())
    assert not _progress.wanted(ns(quiet=True, json=False), _Tty())
    assert not _progress.wanted(ns(quiet=False, json=True), _Tty())
    assert not _progress.wanted(ns(quiet=False, json=False), io.StringIO())
