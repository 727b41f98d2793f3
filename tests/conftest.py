"""Shared fixtures: paths to the public conformance data, keys, and server markers."""

from __future__ import annotations

import os
import re
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


# -- no silent skips -------------------------------------------------------------------------
# A test may skip only for a reason listed here; any other skip fails the run, so a missing
# tool or service cannot quietly turn a test off. CI (MLSEAL_REQUIRE_PG=1,
# MLSEAL_REQUIRE_CHROMIUM=1) turns the first two into failures as well.
ALLOWED_SKIPS = (
    re.compile(r"PostgreSQL .*does not answer|no PostgreSQL server"),  # README: skip unless MLSEAL_REQUIRE_PG=1
    re.compile(r"chromium is not installed"),  # unless MLSEAL_REQUIRE_CHROMIUM=1
    re.compile(r"no .*testdata beside this checkout"),  # the vendored copy is tested instead
    re.compile(r"all tests skipped by \+SKIP option"),  # a doctest whose examples are all illustrations
)
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if not any(p.search(reason) for p in ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected_skips:
        lines = "\n  ".join(_unexpected_skips)
        print(f"\nFAILED: {len(_unexpected_skips)} test(s) skipped for a reason not allowed in tests/conftest.py"
              f" ALLOWED_SKIPS (install what they need, or fix them):\n  {lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
