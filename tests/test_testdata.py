"""The conformance data kept in tests/testdata is the published data, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_TESTDATA, VENDORED_TESTDATA


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_vendored_copy_matches_shared_testdata() -> None:
    if not SHARED_TESTDATA.is_dir():
        pytest.skip(f"no {SHARED_TESTDATA} beside this checkout to compare with")
    shared, vendored = _files(SHARED_TESTDATA), _files(VENDORED_TESTDATA)
    assert sorted(shared) == sorted(vendored)
    changed = [name for name in shared if shared[name] != vendored[name]]
    assert not changed, f"tests/testdata differs from {SHARED_TESTDATA}: {changed[:5]}"
