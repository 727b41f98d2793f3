"""`mlseal ledger init` against the real PostgreSQL server: versioned, idempotent schema
creation and least-privilege client roles (the ones Vault's database engine issues logins
for, with the creation statements shipped in infra/vault/database-roles.json)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mlseal.cli import main
from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ledger import open_ledger
from mlseal.ledger._postgres import init_schema
from mlseal.ledger._store import SCHEMA_VERSION
from mlseal.ledger.record import RecordDraft
from mlseal.ledger.verify import verify_ledger
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.fixtures_ledger import PG_BASE, pg_available

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
VAULT_DB_ROLES = REPO / "infra" / "vault" / "database-roles.json"


def _url(schema: str, user: str | None = None) -> str:
    base = PG_BASE if user is None else PG_BASE.replace("postgres@", f"{user}@", 1)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh, empty schema (never a skip: this area needs the server)."""
    if not pg_available():
        pytest.fail(f"PostgreSQL at {PG_BASE} does not answer: the ledger init tests need it")
    name = f"mlseal_init_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def roles() -> Iterator[list[str]]:
    """Role names to use; every role created under these names is dropped afterwards."""
    made: list[str] = []
    yield made
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        for role in reversed(made):
            c.execute(f'DROP OWNED BY "{role}" CASCADE') if _exists(c, role) else None
            c.execute(f'DROP ROLE IF EXISTS "{role}"')


def _exists(c: psycopg.Connection, role: str) -> bool:
    return c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _name(kind: str, roles: list[str]) -> str:
    role = f"mlseal_t_{kind}_{uuid.uuid4().hex[:8]}"
    roles.append(role)
    return role


def _vault_login(group: str, vault_role: str, roles: list[str]) -> str:
    """A login made the way Vault's database engine makes it, from the shipped statements."""
    login = f"v-k8s-{vault_role}-{uuid.uuid4().hex[:8]}"
    roles.insert(0, login)  # dropped before its group
    spec = json.loads(VAULT_DB_ROLES.read_text())[vault_role]
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        for stmt in spec["creation_statements"]:
            stmt = (stmt.replace("{{name}}", login).replace("{{password}}", "unused-with-trust-auth")
                    .replace("{{expiration}}", "2999-01-01 00:00:00+00"))
            for shipped in ("mlseal_ledger_writer", "mlseal_ledger_reader", "mlseal_ledger_witness"):
                stmt = stmt.replace(shipped, group)
            c.execute(stmt)
    return login


def _snapshot(schema: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(PG_BASE) as c:
        meta = c.execute(f"SELECT key, value FROM {schema}.mlseal_meta ORDER BY key").fetchall()
        head = c.execute(f"SELECT size, last_hash, frontier FROM {schema}.mlseal_head").fetchall()
        acl = c.execute(
            "SELECT c.relname, c.relacl::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s ORDER BY c.relname", (schema,)
        ).fetchall()
        nsp = c.execute("SELECT nspacl::text FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
    return {"meta": meta, "head": head, "acl": acl, "nsp": nsp}


def _append(url: str, signer: LocalKeySigner) -> int:
    with open_ledger(url, create=False) as led:
        return led.append(RecordDraft(stage="ingest"), signer, signer_name="pipeline").seq


# --- schema -----------------------------------------------------------------------------------

def test_init_creates_a_versioned_schema_and_a_rerun_changes_nothing(schema: str, roles: list[str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    writer, reader = _name("w", roles), _name("r", roles)
    argv = ["ledger", "init", "--ledger", _url(schema), "--grant-writer", writer, "--grant-reader", reader, "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["created"] is True and first["changed"] is True
    assert first["schema"] == schema and first["schema_version"] == SCHEMA_VERSION
    assert sorted(first["created_roles"]) == sorted([writer, reader])
    assert [writer, "mlseal_entries", "INSERT"] in first["granted"]
    before = _snapshot(schema)
    assert dict(before["meta"])["schema_version"] == str(SCHEMA_VERSION)

    assert main(argv) == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out)
    assert second["created"] is False and second["changed"] is False
    assert second["granted"] == [] and second["revoked"] == [] and second["created_roles"] == []
    assert "no change" in captured.err
    assert _snapshot(schema) == before


def test_init_accepts_a_ledger_created_on_open_and_keeps_its_records(schema: str) -> None:
    signer = LocalKeySigner.generate()
    with open_ledger(_url(schema)) as led:  # the old path: schema created on first open
        led.append(RecordDraft(stage="ingest"), signer, signer_name="pipeline")
    report = init_schema(_url(schema), display="test")
    assert report.created is False and report.changed is False and report.schema_version == SCHEMA_VERSION
    with open_ledger(_url(schema), create=False) as led:
        assert led.size() == 1
        assert verify_ledger(led, TrustRoot.of(signer.verifier("pipeline"))).ok


def test_a_ledger_made_by_init_opens_and_appends(schema: str) -> None:
    init_schema(_url(schema), display="test")
    assert _append(_url(schema), LocalKeySigner.generate()) == 0


def test_init_refuses_a_newer_schema(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    init_schema(_url(schema), display="test")
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"UPDATE {schema}.mlseal_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    before = _snapshot(schema)
    with pytest.raises(ConfigurationError, match=rf"schema version {SCHEMA_VERSION + 1} is newer.*upgrade mlseal"):
        init_schema(_url(schema), display="test")
    assert main(["ledger", "init", "--ledger", _url(schema)]) == 2
    assert "newer" in capsys.readouterr().err
    assert _snapshot(schema) == before


@pytest.mark.parametrize("damage", [
    "CREATE TABLE {s}.mlseal_entries (seq bigint)",  # mlseal-looking tables, no meta
    "CREATE TABLE {s}.mlseal_meta (key text PRIMARY KEY, value text NOT NULL);"
    "INSERT INTO {s}.mlseal_meta VALUES ('format', 'someone-else')",
])
def test_init_refuses_a_foreign_schema(schema: str, damage: str) -> None:
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        for stmt in damage.format(s=schema).split(";"):
            c.execute(stmt)
    with pytest.raises(ConfigurationError, match=r"foreign|not an mlseal ledger"):
        init_schema(_url(schema), display="test")
    with psycopg.connect(PG_BASE) as c:
        assert c.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'mlseal_head'",
            (schema,),
        ).fetchone() == (0,)


# --- roles ------------------------------------------------------------------------------------

def test_reader_role_reads_and_verifies_but_cannot_append(schema: str, roles: list[str]) -> None:
    writer_group, reader_group = _name("w", roles), _name("r", roles)
    init_schema(_url(schema), display="test", writers=[writer_group], readers=[reader_group])
    writer = _vault_login(writer_group, "mlseal-ledger-writer", roles)
    reader = _vault_login(reader_group, "mlseal-ledger-reader", roles)
    signer = LocalKeySigner.generate()

    assert _append(_url(schema, writer), signer) == 0
    assert _append(_url(schema, writer), signer) == 1

    with open_ledger(_url(schema, reader), create=False) as led:
        assert led.size() == 2
        assert verify_ledger(led, TrustRoot.of(signer.verifier("pipeline"))).ok
    with pytest.raises(InfrastructureError, match="permission denied"):
        _append(_url(schema, reader), signer)
    with psycopg.connect(_url(schema, reader), autocommit=True) as c:
        for stmt in ("INSERT INTO mlseal_meta VALUES ('x', 'y')", "UPDATE mlseal_head SET size = 0",
                     "DELETE FROM mlseal_entries", "CREATE TABLE mlseal_x (a int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
    with open_ledger(_url(schema), create=False) as led:
        assert led.size() == 2


def test_writer_role_cannot_rewrite_history(schema: str, roles: list[str]) -> None:
    group = _name("w", roles)
    init_schema(_url(schema), display="test", writers=[group])
    writer = _vault_login(group, "mlseal-ledger-writer", roles)
    _append(_url(schema, writer), LocalKeySigner.generate())
    with psycopg.connect(_url(schema, writer), autocommit=True) as c:
        for stmt in ("DELETE FROM mlseal_entries", "TRUNCATE mlseal_nodes", "UPDATE mlseal_entries SET entry = ''",
                     "UPDATE mlseal_meta SET value = '0'", "DROP TABLE mlseal_digests"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)


def test_init_takes_back_privileges_a_reader_should_not_have(schema: str, roles: list[str]) -> None:
    role = _name("r", roles)
    init_schema(_url(schema), display="test", writers=[role])  # wrongly a writer first
    report = init_schema(_url(schema), display="test", readers=[role])
    assert (role, "mlseal_entries", "INSERT") in report.revoked
    assert (role, "mlseal_head", "UPDATE") in report.revoked
    login = _vault_login(role, "mlseal-ledger-reader", roles)
    with pytest.raises(InfrastructureError, match="permission denied"):
        _append(_url(schema, login), LocalKeySigner.generate())
    assert init_schema(_url(schema), display="test", readers=[role]).changed is False


def test_init_refuses_unsafe_role_choices(schema: str, roles: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="superuser"):
        init_schema(_url(schema), display="test", readers=["postgres"])
    role = _name("x", roles)
    with pytest.raises(ConfigurationError, match="both writer and reader"):
        init_schema(_url(schema), display="test", writers=[role], readers=[role])


def test_init_never_prints_the_password(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(schema).replace("postgres@", "postgres:s3cret-Ledger-PW@", 1)
    assert main(["ledger", "init", "--ledger", url, "--json"]) == 0
    captured = capsys.readouterr()
    assert "s3cret-Ledger-PW" not in captured.out + captured.err
    assert json.loads(captured.out)["ledger"].startswith("postgresql://postgres:***@")


def test_init_on_sqlite_creates_once_and_refuses_grants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    assert main(["ledger", "init", "--ledger", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] is True
    assert main(["ledger", "init", "--ledger", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert main(["ledger", "init", "--ledger", url, "--grant-reader", "r"]) == 2
    assert "PostgreSQL ledgers only" in capsys.readouterr().err


# --- schema version 2: checkpoints ------------------------------------------------------------

def _make_v1(schema: str) -> None:
    """Turn a fresh schema into what mlseal wrote before checkpoints were stored (version 1)."""
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f"DROP TABLE {schema}.mlseal_checkpoints")
        c.execute(f"UPDATE {schema}.mlseal_meta SET value = '1' WHERE key = 'schema_version'")


def _note(size: int) -> bytes:
    from mlseal.ledger.checkpoint import Checkpoint, sign_checkpoint

    return sign_checkpoint(Checkpoint("mlseal.local/ledger", size, bytes(32)), LocalKeySigner.generate())


def test_init_migrates_a_version_1_ledger_and_keeps_its_records(schema: str, roles: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    writer_group, reader_group = _name("w", roles), _name("r", roles)
    signer = LocalKeySigner.generate()
    init_schema(_url(schema), display="test", writers=[writer_group], readers=[reader_group])
    _append(_url(schema), signer)
    _make_v1(schema)
    # version-1 schema: the stores open it, hold no checkpoint, and say how to migrate
    with open_ledger(_url(schema), create=False) as led:
        assert led.latest_checkpoint() is None
        with pytest.raises(ConfigurationError, match=r"schema version 1 .*mlseal ledger init"):
            led.add_checkpoint(_note(1))
    argv = ["ledger", "init", "--ledger", _url(schema), "--grant-writer", writer_group,
            "--grant-reader", reader_group, "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["migrated_from"] == 1 and out["changed"] is True and out["schema_version"] == SCHEMA_VERSION
    assert [writer_group, "mlseal_checkpoints", "SELECT"] in out["granted"]
    assert [writer_group, "mlseal_checkpoints", "INSERT"] not in out["granted"]
    assert [reader_group, "mlseal_checkpoints", "SELECT"] in out["granted"]
    assert dict(_snapshot(schema)["meta"])["schema_version"] == str(SCHEMA_VERSION)
    assert main(argv) == 0  # idempotent
    again = json.loads(capsys.readouterr().out)
    assert again["changed"] is False and again["migrated_from"] is None
    with open_ledger(_url(schema), create=False) as led:
        assert led.size() == 1 and verify_ledger(led, TrustRoot.of(signer.verifier("pipeline"))).ok
        note = _note(1)
        led.add_checkpoint(note)
        assert led.latest_checkpoint() == note


def test_only_the_witness_stores_checkpoints_writers_and_readers_read_them(schema: str, roles: list[str]) -> None:
    writer_group, reader_group, witness_group = _name("w", roles), _name("r", roles), _name("x", roles)
    init_schema(_url(schema), display="test", writers=[writer_group], readers=[reader_group],
                witnesses=[witness_group])
    writer = _vault_login(writer_group, "mlseal-ledger-writer", roles)
    reader = _vault_login(reader_group, "mlseal-ledger-reader", roles)
    witness = _vault_login(witness_group, "mlseal-ledger-witness", roles)
    note = _note(0)
    with open_ledger(_url(schema, witness), create=False) as led:
        led.add_checkpoint(note)  # identity column: no sequence grant needed
    for login in (writer, reader):
        with open_ledger(_url(schema, login), create=False) as led:
            assert led.latest_checkpoint() == note
            with pytest.raises(InfrastructureError, match="permission denied"):
                led.add_checkpoint(_note(5))
    for login in (writer, reader, witness):
        with psycopg.connect(_url(schema, login), autocommit=True) as c:
            for stmt in ("DELETE FROM mlseal_checkpoints", "UPDATE mlseal_checkpoints SET size = 99",
                         "TRUNCATE mlseal_checkpoints"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(stmt)


def test_the_witness_role_reads_and_adds_checkpoints_only(schema: str, roles: list[str]) -> None:
    group = _name("x", roles)
    report = init_schema(_url(schema), display="test", witnesses=[group])
    assert (group, "mlseal_checkpoints", "INSERT") in report.granted
    _append(_url(schema), LocalKeySigner.generate())
    login = _vault_login(group, "mlseal-ledger-witness", roles)
    with open_ledger(_url(schema, login), create=False) as led:
        assert led.size() == 1
        led.add_checkpoint(_note(1))
    with pytest.raises(InfrastructureError, match="permission denied"):
        _append(_url(schema, login), LocalKeySigner.generate())
    with psycopg.connect(_url(schema, login), autocommit=True) as c:
        for stmt in ("DELETE FROM mlseal_checkpoints", "UPDATE mlseal_head SET size = 0", "DELETE FROM mlseal_entries"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
    with pytest.raises(ConfigurationError, match="both writer and witness"):
        init_schema(_url(schema), display="test", writers=[group], witnesses=[group])
