"""PostgreSQL storage backend (psycopg 3): many writers across a cluster.

Serialisation: every append locks the single head row (``SELECT … FOR UPDATE``), which
holds the tree size, the last entry hash and the Merkle frontier (the hashes of the
perfect subtrees that make up the current tree, at most log2 n of them). Writers queue
on that row lock, so ``seq`` comes from the head, never from a sequence: no gaps, no
forks. ``seq`` is also the primary key and ``entry_hash`` is unique, so even a bug in the
locking could not store two entries at one position or one entry twice.

Ambiguous commits: if the connection drops while COMMIT is in flight, the append does
not know whether it happened. It reconnects and looks the entry up by its hash: found
means committed (return it), absent means rolled back (build a new entry and retry).
So a retry never duplicates an entry.

The tables live in the connection's current schema; pick one with the libpq URI
option ``options=-csearch_path%3Dmyschema``.

Messages never carry the DSN's secrets: they name the ledger by its redacted form
(`mlseal.ledger.dsn.redact_dsn`), psycopg's error texts (libpq echoes fragments of a
malformed DSN, even the whole URI) pass through `mlseal.ledger.dsn.scrub`, psycopg's
own log records are scrubbed while this module connects, and a DSN whose host or port
holds what must be part of an unencoded password is refused before it reaches DNS.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mlseal.errors import ConfigurationError, InfrastructureError, LedgerConflict
from mlseal.ledger import merkle
from mlseal.ledger._store import (
    CHECKPOINTS_SINCE,
    ROLE_INPUT,
    ROLE_OUTPUT,
    SCHEMA_FORMAT,
    SCHEMA_VERSION,
    Build,
    CheckpointRow,
    DigestRow,
    NodeRange,
    NodeRow,
    Prepared,
    batched_entries,
    check_meta,
)
from mlseal.ledger.dsn import redact_text, scrub
from mlseal.ledger.merkle import HASH_SIZE, Coord
from mlseal.ledger.record import ZERO_HASH

#: One small row per connection slot; updating it synchronously is how an append waits
#: for the disk (see PostgresStore._make_durable).
_FLUSH_TABLE = "CREATE TABLE IF NOT EXISTS mlseal_flush (slot integer PRIMARY KEY, n bigint NOT NULL)"
_FLUSH = (
    "INSERT INTO mlseal_flush (slot, n) VALUES (pg_backend_pid() % 256, 1) "
    "ON CONFLICT (slot) DO UPDATE SET n = mlseal_flush.n + 1"
)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS mlseal_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS mlseal_head (
        id integer PRIMARY KEY CHECK (id = 1),
        size bigint NOT NULL,
        last_hash bytea NOT NULL,
        frontier bytea NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS mlseal_entries (
        seq bigint PRIMARY KEY,
        entry bytea NOT NULL,
        entry_hash bytea NOT NULL UNIQUE)""",
    """CREATE TABLE IF NOT EXISTS mlseal_nodes (
        level integer NOT NULL,
        idx bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, idx))""",
    _FLUSH_TABLE,
    """CREATE TABLE IF NOT EXISTS mlseal_digests (
        sha256 bytea NOT NULL,
        role smallint NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (sha256, role, seq))""",
]

#: schema version 2: signed checkpoint notes, stored unverified (readers verify them).
#: An identity column needs no sequence privilege from the roles that insert.
_CHECKPOINTS = [
    """CREATE TABLE IF NOT EXISTS mlseal_checkpoints (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        size bigint NOT NULL CHECK (size >= 0),
        note bytea NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS mlseal_checkpoints_size ON mlseal_checkpoints (size, id)",
]

#: What each kind of ledger client may do, per table (`init_schema` grants exactly this
#: and revokes the rest). Writers append (INSERT, and UPDATE of the head row, which
#: ``SELECT … FOR UPDATE`` needs) but never DELETE or TRUNCATE: the log is append-only
#: for them too. Readers (the admission webhook, auditors) only SELECT.
WRITER_PRIVILEGES: Mapping[str, frozenset[str]] = {
    "mlseal_meta": frozenset({"SELECT"}),
    "mlseal_head": frozenset({"SELECT", "UPDATE"}),
    "mlseal_entries": frozenset({"SELECT", "INSERT"}),
    "mlseal_nodes": frozenset({"SELECT", "INSERT"}),
    "mlseal_digests": frozenset({"SELECT", "INSERT"}),
    "mlseal_flush": frozenset({"SELECT", "INSERT", "UPDATE"}),
    # writers read checkpoints (stages check the ledger against them) but do not add
    # any: only the witness role does, so a stage's login cannot bury the witness's
    # checkpoints under unverifiable ones
    "mlseal_checkpoints": frozenset({"SELECT"}),
}
READER_PRIVILEGES: Mapping[str, frozenset[str]] = {
    "mlseal_meta": frozenset({"SELECT"}),
    "mlseal_head": frozenset({"SELECT"}),
    "mlseal_entries": frozenset({"SELECT"}),
    "mlseal_nodes": frozenset({"SELECT"}),
    "mlseal_digests": frozenset({"SELECT"}),
    "mlseal_flush": frozenset(),
    "mlseal_checkpoints": frozenset({"SELECT"}),
}
#: The witness (``mlseal ledger witness``) reads everything and may add checkpoints, nothing else.
WITNESS_PRIVILEGES: Mapping[str, frozenset[str]] = {
    **READER_PRIVILEGES,
    "mlseal_checkpoints": frozenset({"SELECT", "INSERT"}),
}
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

#: Round trip 1 of an append: open the transaction and lock the head row. The head row
#: lock is held until COMMIT; an asynchronous commit releases it without waiting for the
#: disk, and the synchronous flush update afterwards waits for it (see _COMMIT).
_LOCK_HEAD = (
    "BEGIN; SET LOCAL synchronous_commit = off; "
    "SELECT size, last_hash, frontier FROM mlseal_head WHERE id = 1 FOR UPDATE"
)

#: Everything an append writes, in one statement, prepared once per connection so the
#: server does not plan it while the head lock is held. Hash lists travel as one bytea
#: each (32 bytes per hash; array literals cost the client more than the rest of the
#: message): $4 the new Merkle nodes, level k at index seq >> k (what appending leaf
#: ``seq`` completes, merkle.append_nodes); $5/$6 the output/input artifact digests.
_PREPARE_WRITE = """
PREPARE mlseal_write (bigint, bytea, bytea, bytea, bytea, bytea, bytea) AS
WITH e AS (
    INSERT INTO mlseal_entries (seq, entry, entry_hash) VALUES ($1, $2, $3)
), n AS (
    INSERT INTO mlseal_nodes (level, idx, hash)
    SELECT k, $1 >> k, substring($4 FROM 32 * k + 1 FOR 32) FROM generate_series(0, length($4) / 32 - 1) AS k
), d AS (
    INSERT INTO mlseal_digests (sha256, role, seq)
    SELECT DISTINCT substring(x.b FROM 32 * i + 1 FOR 32), x.role, $1
    FROM (VALUES ($5, 0::smallint), ($6, 1::smallint)) AS x(b, role), generate_series(0, length(x.b) / 32 - 1) AS i
    ON CONFLICT DO NOTHING
)
UPDATE mlseal_head SET size = $1 + 1, last_hash = $3, frontier = $7 WHERE id = 1
"""

#: Round trip 2, one simple-query message: the writes, COMMIT (which releases the head
#: lock), the WAL position just past our commit record, and the flush update, whose
#: synchronous commit returns only once the WAL is on disk past ours.
_COMMIT = (
    "EXECUTE mlseal_write (%s, %s, %s, %s, %s, %s, %s); COMMIT; "
    "SELECT pg_current_wal_insert_lsn()::text; " + _FLUSH.replace("%", "%%")
)

#: attempts for one append when the connection fails (each re-checks the last one)
_ATTEMPTS = 3


#: Schema creation and `init_schema` by several processes at once must not race.
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.mlseal_ledger'))"


# --- connecting without leaking the DSN ------------------------------------------------

#: the DSN being connected in this context, for scrubbing psycopg's own log records
_CONNECTING: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlseal_pg_connecting", default=None)


class _ScrubPsycopgLog(logging.Filter):
    """Scrub psycopg's log records: at DEBUG they carry hosts and libpq error texts."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        dsn = _CONNECTING.get()
        clean = scrub(text, dsn) if dsn else redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


_PSYCOPG_LOG_FILTER = _ScrubPsycopgLog()
for _name in ("psycopg", "psycopg.pq"):
    if _PSYCOPG_LOG_FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_PSYCOPG_LOG_FILTER)


def error_text(exc: BaseException, url: str) -> str:
    """``str(exc)`` (a psycopg error) without anything of ``url`` that its redacted form hides."""
    return scrub(str(exc).strip(), url)


def _check_conninfo(url: str, display: str) -> None:
    """Refuse a malformed DSN, or one libpq would split inside a password, before any I/O.

    libpq ends the userinfo of a URI at its first '@' (unless a '/' comes first), so an
    unencoded '@' or '/' in a password moves the rest of the password into the host,
    port or database, and connecting would send it to the DNS resolver.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigurationError(
            f"ledger {display}: malformed connection string: {error_text(exc, url)}"
        ) from None
    hosts = ",".join(str(params.get(k) or "") for k in ("host", "hostaddr"))
    dbname = str(params.get("dbname") or "") if "://" in url else ""
    if "@" in hosts or "@" in dbname:
        raise ConfigurationError(
            f"ledger {display}: an '@' past the user name and password: percent-encode '@', '/', '?' and '#' "
            "in the user name and password (%40 %2F %3F %23)"
        )
    if not re.fullmatch(r"[0-9,]*", str(params.get("port") or "")):
        raise ConfigurationError(
            f"ledger {display}: the port is not a number (if the password holds '/' or ':', "
            "percent-encode them: %2F %3A)"
        )


def _connect(url: str, display: str, **kwargs: Any) -> psycopg.Connection[Any]:
    _check_conninfo(url, display)
    token = _CONNECTING.set(url)
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.ProgrammingError as exc:  # malformed URI or options
        raise ConfigurationError(f"ledger {display}: {error_text(exc, url)}") from None
    except psycopg.Error as exc:
        raise InfrastructureError(f"ledger {display}: cannot connect: {error_text(exc, url)}") from None
    finally:
        _CONNECTING.reset(token)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reads(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A read of `PostgresStore`: psycopg errors become InfrastructureError, scrubbed."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except psycopg.Error as exc:
            store = args[0]
            assert isinstance(store, PostgresStore)
            raise InfrastructureError(
                f"ledger {store._display}: read failed: {error_text(exc, store._url)}"
            ) from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _ledger_tables(db: psycopg.Connection[Any]) -> set[str]:
    return {
        str(r[0])
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name LIKE 'mlseal\\_%'"
        )
    }


def _refuse_foreign(tables: set[str], display: str) -> None:
    if tables:
        raise ConfigurationError(
            f"ledger {display}: tables {sorted(tables)} exist without mlseal_meta: "
            "refusing a foreign or damaged schema (use an empty schema, or drop these tables)"
        )


def _create_schema(db: psycopg.Connection[Any], tables: set[str], display: str) -> None:
    """Create the tables and the empty head in the current schema (inside a transaction)."""
    _refuse_foreign(tables, display)
    for stmt in (*_SCHEMA, *_CHECKPOINTS):
        db.execute(stmt)
    db.execute(
        "INSERT INTO mlseal_meta (key, value) VALUES ('format', %s), ('schema_version', %s)",
        (SCHEMA_FORMAT, str(SCHEMA_VERSION)),
    )
    db.execute("INSERT INTO mlseal_head (id, size, last_hash, frontier) VALUES (1, 0, %s, '')", (bytes(32),))


@dataclass(frozen=True)
class InitReport:
    """What `init_schema` found and changed. ``changed`` is False on a re-run."""

    schema: str
    schema_version: int
    created: bool
    #: (role, table, privilege) granted / revoked by this call
    granted: tuple[tuple[str, str, str], ...] = ()
    revoked: tuple[tuple[str, str, str], ...] = ()
    #: NOLOGIN group roles this call created
    created_roles: tuple[str, ...] = ()
    #: the schema version this call migrated from (None: no migration)
    migrated_from: int | None = None

    @property
    def changed(self) -> bool:
        return (self.created or self.migrated_from is not None
                or bool(self.granted or self.revoked or self.created_roles))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "created": self.created,
            "changed": self.changed,
            "migrated_from": self.migrated_from,
            "created_roles": list(self.created_roles),
            "granted": [list(g) for g in self.granted],
            "revoked": [list(r) for r in self.revoked],
        }


def init_schema(
    url: str, *, display: str, writers: Sequence[str] = (), readers: Sequence[str] = (),
    witnesses: Sequence[str] = (),
) -> InitReport:
    """Create (or check) the ledger schema and set the privileges of its client roles.

    Idempotent, in one transaction under the schema lock:

    1. no ``mlseal_*`` table: create the schema at `SCHEMA_VERSION`; ``mlseal_*`` tables
       without ``mlseal_meta``: refuse (foreign or damaged schema);
    2. check ``mlseal_meta``: the format must be mlseal's and ``schema_version`` at most
       the one this code writes (a newer one is refused: upgrade mlseal first); an
       older one is migrated (version 1 -> 2: the ``mlseal_checkpoints`` table);
    3. each role in ``writers``/``readers`` is created as a NOLOGIN group role if it
       does not exist (Vault's database engine makes its short-lived logins members of
       it), gets USAGE on the schema and exactly `WRITER_PRIVILEGES` /
       `READER_PRIVILEGES` on the tables (``witnesses``: `WITNESS_PRIVILEGES`, read
       everything and add checkpoints); every other table privilege it holds directly
       (DELETE, TRUNCATE, a reader's INSERT, ...) is revoked.

    Run as the owner of the schema (the database administrator).
    """
    _check_roles(writers, readers, display, witnesses)
    db = _connect(url, display, autocommit=True)
    try:
        with db.transaction():
            db.execute(_SCHEMA_LOCK)
            row = db.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise ConfigurationError(
                    f"ledger {display}: no current schema (the search_path names no existing schema)"
                )
            schema = str(row[0])
            tables = _ledger_tables(db)
            created = "mlseal_meta" not in tables
            if created:
                _create_schema(db, tables, display)
            meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM mlseal_meta")}
            check_meta(meta, display)
            migrated_from = int(meta["schema_version"])
            _migrate(db, migrated_from)
            version = SCHEMA_VERSION
            db.execute(_FLUSH_TABLE)
            new_roles: list[str] = []
            granted: list[tuple[str, str, str]] = []
            revoked: list[tuple[str, str, str]] = []
            for roles, wanted in ((writers, WRITER_PRIVILEGES), (readers, READER_PRIVILEGES),
                                  (witnesses, WITNESS_PRIVILEGES)):
                for role in roles:
                    if _ensure_role(db, role, display):
                        new_roles.append(role)
                    g, r = _set_privileges(db, schema, role, wanted)
                    granted += g
                    revoked += r
    except psycopg.Error as exc:
        raise InfrastructureError(
            f"ledger {display}: schema initialisation failed: {error_text(exc, url)}"
        ) from None
    finally:
        db.close()
    return InitReport(
        schema=schema, schema_version=version, created=created, granted=tuple(granted),
        revoked=tuple(revoked), created_roles=tuple(new_roles),
        migrated_from=None if created or migrated_from == version else migrated_from,
    )


def _migrate(db: psycopg.Connection[Any], version: int) -> None:
    """Bring a schema at ``version`` to `SCHEMA_VERSION` (inside init's transaction, under its lock)."""
    if version < CHECKPOINTS_SINCE:
        for stmt in _CHECKPOINTS:
            db.execute(stmt)
    if version < SCHEMA_VERSION:
        db.execute("UPDATE mlseal_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def _check_roles(
    writers: Sequence[str], readers: Sequence[str], display: str, witnesses: Sequence[str] = ()
) -> None:
    for (a, an), (b, bn) in (((writers, "writer"), (readers, "reader")), ((writers, "writer"), (witnesses, "witness")),
                             ((readers, "reader"), (witnesses, "witness"))):
        both = set(a) & set(b)
        if both:
            raise ConfigurationError(
                f"ledger {display}: role(s) {sorted(both)} given as both {an} and {bn}; a role is one kind only"
            )
    for role in (*writers, *readers, *witnesses):
        if not role or len(role) > 63 or "\x00" in role:
            raise ConfigurationError(f"ledger {display}: {role!r} is not a PostgreSQL role name (1-63 characters)")


def _ensure_role(db: psycopg.Connection[Any], role: str, display: str) -> bool:
    """Create ``role`` as a NOLOGIN group role if missing; refuse superusers and the owner."""
    row = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        return True
    if row[0]:
        raise ConfigurationError(
            f"ledger {display}: role {role!r} is a superuser; privileges cannot restrict it (use a plain role)"
        )
    owner = db.execute(
        "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'mlseal_entries'"
    ).fetchone()
    if owner is not None and owner[0] == role:
        raise ConfigurationError(
            f"ledger {display}: role {role!r} owns the ledger tables; grant to a separate client role"
        )
    return False


def _set_privileges(
    db: psycopg.Connection[Any], schema: str, role: str, wanted: Mapping[str, frozenset[str]]
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    granted: list[tuple[str, str, str]] = []
    revoked: list[tuple[str, str, str]] = []
    ident = sql.Identifier(role)
    usage = db.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)).fetchone()
    if not (usage and usage[0]):
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident))
        granted.append((role, schema, "USAGE"))
    for table, privileges in wanted.items():
        # privileges held directly (aclexplode of the table's ACL), not through membership
        held = {
            str(r[0])
            for r in db.execute(
                "SELECT a.privilege_type FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
                "WHERE n.nspname = %s AND c.relname = %s AND a.grantee = "
                "(SELECT oid FROM pg_roles WHERE rolname = %s)",
                (schema, table, role),
            )
        }
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        for priv in sorted(privileges - held):
            db.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(priv), target, ident))
            granted.append((role, table, priv))
        for priv in sorted((held & set(_TABLE_PRIVILEGES)) - privileges):
            db.execute(sql.SQL("REVOKE {} ON {} FROM {}").format(sql.SQL(priv), target, ident))
            revoked.append((role, table, priv))
    return granted, revoked


def _split_frontier(raw: bytes) -> list[bytes]:
    return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]


class PostgresStore:
    def __init__(self, url: str, *, create: bool, display: str) -> None:
        self._url = url
        self._display = display
        self._create = create
        self.last_commit_lsn: str | None = None
        self._durable: Prepared | None = None  # the last append whose flush update returned
        self._prepared = False  # mlseal_write exists on this connection
        self._db = self._connect()
        try:
            self._setup(create)
        except psycopg.Error as exc:
            self._db.close()
            raise ConfigurationError(
                f"ledger {display}: not a usable mlseal ledger: {error_text(exc, url)}"
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        # Parameters are bound on the client, so that one simple-query message can
        # carry several statements (an append's writes, COMMIT and the flush).
        return _connect(self._url, self._display, autocommit=True, cursor_factory=psycopg.ClientCursor)

    def _text(self, exc: BaseException) -> str:
        return error_text(exc, self._url)

    # --- schema ---------------------------------------------------------------------
    def _setup(self, create: bool) -> None:
        db = self._db
        with db.transaction():
            # schema creation by several processes at once must not race
            db.execute(_SCHEMA_LOCK)
            tables = _ledger_tables(db)
            if "mlseal_meta" not in tables:
                if not create:
                    _refuse_foreign(tables, self._display)
                    raise ConfigurationError(f"ledger {self._display}: no mlseal ledger in this database/schema")
                _create_schema(db, tables, self._display)
            meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM mlseal_meta")}
            if "mlseal_flush" not in tables and create:
                db.execute(_FLUSH_TABLE)
        check_meta(meta, self._display)
        self._version = int(meta["schema_version"])

    # --- writes ---------------------------------------------------------------------
    def append(self, build: Build) -> Prepared:
        last_error: Exception | None = None
        for _ in range(_ATTEMPTS):
            try:
                p = self._try_append(build)
            except _Ambiguous as exc:
                last_error = exc
                self._reconnect()
                if self.find_entry_hash(exc.prepared.entry_hash) is None:
                    continue  # rolled back: build a new entry on the current head
                p = exc.prepared  # the commit went through before the connection dropped
            except psycopg.OperationalError as exc:  # lost before COMMIT: nothing was written
                last_error = exc
                self._reconnect()
                continue
            except psycopg.errors.UniqueViolation as exc:
                self._rollback()
                raise LedgerConflict(
                    f"ledger {self._display}: concurrent append at the same position: {self._text(exc)}"
                ) from None
            except psycopg.Error as exc:
                self._rollback()
                raise InfrastructureError(f"ledger {self._display}: append failed: {self._text(exc)}") from None
            except BaseException:
                self._rollback()
                raise
            if p is not self._durable:
                self._make_durable()
            return p
        raise InfrastructureError(
            f"ledger {self._display}: append failed after {_ATTEMPTS} attempts: "
            f"{self._text(last_error) if last_error else 'no attempt made'}"
        )

    def _make_durable(self) -> None:
        """Wait until the WAL is on disk past our (asynchronous) commit.

        A transaction that writes WAL commits synchronously (the session default):
        the server flushes the WAL up to its commit record, which lies after ours.
        (A transaction that only takes an xid writes no WAL before its commit record
        and is not flushed, hence a real row update, in a per-connection slot so that
        writers do not queue on it.) Concurrent writers' flushes are grouped by the
        server (one fsync covers every commit before it), which is what lets
        serialised appends exceed one per fsync. WAL order also means a crash can only
        lose a suffix of unacknowledged appends, never leave a gap.
        """
        for attempt in range(2):
            try:
                self._db.execute(_FLUSH)
                return
            except psycopg.OperationalError as exc:
                if attempt:
                    raise InfrastructureError(
                        f"ledger {self._display}: could not confirm the append is durable: {self._text(exc)}"
                    ) from None
                self._reconnect()

    def _try_append(self, build: Build) -> Prepared:
        """One attempt: two round trips, the second one releasing the head lock.

        Both are simple-query messages (no pipeline mode, whose result loop keeps a
        waiting client busy on the CPU that the lock holder needs). If the connection
        drops during the second one, nobody knows whether COMMIT ran.
        """
        db = self._db
        if not self._prepared:
            db.execute(_PREPARE_WRITE)
            self._prepared = True
        cur = db.execute(_LOCK_HEAD)
        cur.nextset()
        cur.nextset()
        row = cur.fetchone()
        if row is None:
            raise ConfigurationError(f"ledger {self._display}: head row is missing")
        size, last_hash, raw_frontier = int(row[0]), bytes(row[1]), bytes(row[2])
        frontier = _split_frontier(raw_frontier)
        coords = merkle.append_coords(size)
        # the siblings an append needs are the right-most perfect subtrees of the tree
        cover = merkle.perfect_cover(0, size)
        if len(cover) != len(frontier):
            raise InfrastructureError(f"ledger {self._display}: head frontier does not match size {size}")
        by_coord = dict(zip(cover, frontier, strict=True))
        siblings = {c: by_coord[c] for c in coords}
        p = build(size, last_hash.hex() if size else ZERO_HASH, siblings)
        top = p.nodes[-1]
        new_frontier = [*frontier[:len(frontier) - len(coords)], top[2]]
        if [(lv, ix) for lv, ix, _ in p.nodes] != [(k, p.seq >> k) for k in range(len(p.nodes))]:
            raise InfrastructureError(f"ledger {self._display}: unexpected Merkle nodes for record {p.seq}")
        params = (
            p.seq,
            p.entry,
            p.entry_hash,
            b"".join(h for _, _, h in p.nodes),
            b"".join(d for d, role in p.digests if role == ROLE_OUTPUT),
            b"".join(d for d, role in p.digests if role == ROLE_INPUT),
            b"".join(new_frontier),
        )
        try:
            cur = db.execute(_COMMIT, params)
        except psycopg.OperationalError:
            raise _Ambiguous(p) from None
        except psycopg.Error:
            if db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                raise _Ambiguous(p) from None  # failed after COMMIT: stored, not known durable
            raise  # failed before COMMIT: nothing was written
        cur.nextset()
        cur.nextset()
        lsn = cur.fetchone()
        self.last_commit_lsn = str(lsn[0]) if lsn else None
        self._durable = p
        return p

    def _rollback(self) -> None:
        try:
            if not self._db.closed:
                self._db.execute("ROLLBACK")
        except psycopg.Error:
            self._reconnect()

    def _reconnect(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._db.close()
        self._db = self._connect()
        self._prepared = False

    # --- reads ----------------------------------------------------------------------
    @_reads
    def head(self) -> tuple[int, str, bytes]:
        row = self._db.execute("SELECT size, last_hash, frontier FROM mlseal_head WHERE id = 1").fetchone()
        if row is None:
            raise ConfigurationError(f"ledger {self._display}: head row is missing")
        size = int(row[0])
        if size == 0:
            return 0, ZERO_HASH, merkle.EMPTY_ROOT
        return size, bytes(row[1]).hex(), merkle.fold_cover(_split_frontier(bytes(row[2])))

    @_reads
    def size(self) -> int:
        row = self._db.execute("SELECT size FROM mlseal_head WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    @_reads
    def entry(self, seq: int) -> bytes | None:
        row = self._db.execute("SELECT entry FROM mlseal_entries WHERE seq = %s", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    def entries(self, start: int, end: int, batch: int = 1000) -> Iterator[tuple[int, bytes]]:
        return batched_entries(self._fetch, start, end, batch)

    @_reads
    def _fetch(self, start: int, end: int, limit: int) -> list[tuple[int, bytes]]:
        return self._db.execute(
            "SELECT seq, entry FROM mlseal_entries WHERE seq >= %s AND seq < %s ORDER BY seq LIMIT %s",
            (start, end, limit),
        ).fetchall()

    @_reads
    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]:
        if not coords:
            return {}
        levels = [c[0] for c in coords]
        idxs = [c[1] for c in coords]
        rows = self._db.execute(
            "SELECT n.level, n.idx, n.hash FROM mlseal_nodes n "
            "JOIN unnest(%s::integer[], %s::bigint[]) AS w(level, idx) USING (level, idx)",
            (levels, idxs),
        ).fetchall()
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}

    @_reads
    def find_entry_hash(self, entry_hash: bytes) -> int | None:
        row = self._db.execute("SELECT seq FROM mlseal_entries WHERE entry_hash = %s", (entry_hash,)).fetchone()
        return None if row is None else int(row[0])

    @_reads
    def seqs_for_digest(self, sha256: bytes, role: int) -> list[int]:
        rows = self._db.execute(
            "SELECT seq FROM mlseal_digests WHERE sha256 = %s AND role = %s ORDER BY seq", (sha256, role)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def add_checkpoint(self, size: int, note: bytes) -> None:
        if self._version < CHECKPOINTS_SINCE:
            raise ConfigurationError(
                f"ledger {self._display}: schema version {self._version} has no checkpoints table; "
                f"run `mlseal ledger init` as the schema owner to migrate it to version {SCHEMA_VERSION}"
            )
        try:
            self._db.execute("INSERT INTO mlseal_checkpoints (size, note) VALUES (%s, %s)", (size, note))
        except psycopg.Error as exc:
            raise InfrastructureError(
                f"ledger {self._display}: storing a checkpoint failed: {self._text(exc)}"
            ) from None

    @_reads
    def checkpoints(self, limit: int) -> list[bytes]:
        if self._version < CHECKPOINTS_SINCE:
            return []  # an older schema cannot hold any
        rows = self._db.execute(
            "SELECT note FROM mlseal_checkpoints ORDER BY size DESC, id DESC LIMIT %s", (limit,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    @_reads
    def checkpoint_rows(self, after: int | None, limit: int) -> list[CheckpointRow]:
        if self._version < CHECKPOINTS_SINCE:
            return []  # an older schema cannot hold any
        where, params = ("WHERE id > %s", (after, limit)) if after is not None else ("", (limit,))
        rows = self._db.execute(
            f"SELECT id, size, note FROM mlseal_checkpoints {where} ORDER BY id LIMIT %s", params  # noqa: S608
        ).fetchall()
        return [(int(i), int(s), bytes(n)) for i, s, n in rows]

    def iter_digest_rows(self, start: int) -> Iterator[DigestRow]:
        """Digest index rows with ``seq >= start`` by (seq, role, sha256), through a
        server-side cursor on a connection of its own (one snapshot; the server sorts,
        spilling to disk past work_mem), so memory stays bounded."""
        try:
            conn = _connect(self._url, self._display, autocommit=True)
        except psycopg.Error as exc:
            raise InfrastructureError(f"ledger {self._display}: read failed: {self._text(exc)}") from None
        try:
            with conn.transaction(), conn.cursor(name="mlseal_digest_rows") as cur:
                cur.itersize = 4096
                cur.execute(
                    "SELECT seq, role, sha256 FROM mlseal_digests WHERE seq >= %s ORDER BY seq, role, sha256",
                    (start,),
                )
                for seq, role, sha in cur:
                    yield int(seq), int(role), bytes(sha)
        except psycopg.Error as exc:
            raise InfrastructureError(f"ledger {self._display}: read failed: {self._text(exc)}") from None
        finally:
            conn.close()

    def iter_node_rows(self, ranges: Sequence[NodeRange]) -> Iterator[NodeRow]:
        for lv0, lv1, ix0, ix1 in ranges:
            yield from self._node_rows(lv0, lv1, ix0, ix1)

    @_reads
    def _node_rows(self, lv0: int, lv1: int, ix0: int, ix1: int) -> list[NodeRow]:
        if lv0 == lv1:  # an equality on the key's first column lets the index seek on idx
            q = "SELECT level, idx, hash FROM mlseal_nodes WHERE level = %s AND idx BETWEEN %s AND %s ORDER BY idx"
            params: tuple[int, ...] = (lv0, ix0, ix1)
        else:
            q = ("SELECT level, idx, hash FROM mlseal_nodes WHERE level BETWEEN %s AND %s "
                 "AND idx BETWEEN %s AND %s ORDER BY level, idx")
            params = (lv0, lv1, ix0, ix1)
        return [(int(lv), int(ix), bytes(h)) for lv, ix, h in self._db.execute(q, params).fetchall()]

    def close(self) -> None:
        self._db.close()


class _Ambiguous(psycopg.OperationalError):
    """COMMIT failed in flight: the append may or may not have happened."""

    def __init__(self, prepared: Prepared) -> None:
        super().__init__("connection lost during COMMIT")
        self.prepared = prepared
