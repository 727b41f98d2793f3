"""Pytest fixtures for the ledger area (loaded by conftest.py).

- ``ledger_url``: a fresh, empty ledger URL, parametrised over both backends. The
  PostgreSQL variant gets its own schema (dropped afterwards) so parallel runs never
  share tables; it skips when no server answers, unless ``MLSEAL_REQUIRE_PG=1``.
- ``sqlite_url`` / ``pg_url``: one backend only.
- ``ledger_signer`` / ``ledger_trust``: a record signing key and a trust root for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot

PG_BASE = os.environ.get("MLSEAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _pg_schema_url() -> Iterator[str]:
    import psycopg

    if not pg_available():
        if os.environ.get("MLSEAL_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL at {PG_BASE} does not answer and MLSEAL_REQUIRE_PG=1")
        pytest.skip(f"PostgreSQL at {PG_BASE} does not answer")
    schema = f"mlseal_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_BASE else "?"
    try:
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_schema_url()


@pytest.fixture(scope="session")
def ledger_signer() -> LocalKeySigner:
    return LocalKeySigner.generate()


@pytest.fixture(scope="session")
def ledger_trust(ledger_signer: LocalKeySigner) -> TrustRoot:
    return TrustRoot.of(ledger_signer.verifier("pipeline"))
