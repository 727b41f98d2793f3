"""Shared fixtures: paths to the public conformance data, keys, and server markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared/testdata beside the checkout; CI lays a copy of shared/ in the same place.
TESTDATA = Path(os.environ.get("MLSEAL_TESTDATA", REPO.parent / "shared" / "testdata"))


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
