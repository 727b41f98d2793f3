"""Shared fixtures: paths to the public conformance data, keys, and server markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The public conformance data (RFC 9162 proof vectors, a production Sigstore bundle):
# ../shared/testdata beside the checkout where it exists (CI lays a copy of shared/ there),
# else the identical copy kept in tests/testdata so that a fresh clone tests on its own.
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"
VENDORED_TESTDATA = REPO / "tests" / "testdata"
TESTDATA = Path(
    os.environ.get("MLSEAL_TESTDATA")
    or (SHARED_TESTDATA if SHARED_TESTDATA.is_dir() else VENDORED_TESTDATA)
)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"conformance data not found at {TESTDATA} (set MLSEAL_TESTDATA)")
    return TESTDATA

# Each area keeps its fixtures in its own module, so that areas do not edit one file.
pytest_plugins = [
    "tests.fixtures_ledger",
    "tests.fixtures_vault",
    "tests.fixtures_signing",
    "tests.fixtures_admission",
    "tests.fixtures_pipeline",
]
