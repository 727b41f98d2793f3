"""Datasets in and out: the demo dataset, CSV files, URLs, PostgreSQL tables, splits.

Every reader returns the table and an `IngestReport` (source without credentials or
query string, schema, row count, sha256 of the bytes read) — never the rows.

    >>> from mlseal.ml import data
    >>> t = data.make_demo_dataset(rows=20, seed=0)
    >>> "notes" in t.names and "label" in t.names
    True
    >>> back = data.from_csv_bytes(data.to_csv_bytes(t))
    >>> back.equals(t)
    True
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ml import _csv, _report, _synthetic
from mlseal.ml.errors import DataError
from mlseal.ml.table import Column, ColumnType, Schema, Table

__all__ = [
    "DEMO_IDENTITY_COLUMNS",
    "DEMO_LABEL",
    "MAX_URL_BYTES",
    "PG_PREFIX",
    "IngestReport",
    "from_csv_bytes",
    "make_demo_dataset",
    "public_url",
    "read_csv",
    "read_path",
    "read_postgres",
    "read_source",
    "read_url",
    "split",
    "to_csv_bytes",
    "write_csv",
]

#: Label column of the demo dataset: 1 = benign, 0 = malignant (scikit-learn's coding).
DEMO_LABEL = "label"
#: Identity columns the demo dataset adds; all synthetic.
DEMO_IDENTITY_COLUMNS = ("patient_id", "name", "email", "phone", "national_id", "card_number", "notes")
#: Default cap on bytes read from a URL (256 MiB).
MAX_URL_BYTES = 256 * 1024 * 1024
PG_PREFIX = "pgtable:"


@dataclass(frozen=True)
class IngestReport:
    """What was read: where from (no credentials), its schema and size."""

    source: str
    kind: str  # "file", "url", "postgresql", "generated"
    schema: Schema
    rows: int
    sha256: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def to_obj(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "schema": self.schema.to_obj(), "rows": self.rows,
                "columns": len(self.schema.columns), "sha256": self.sha256, **dict(self.extra)}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())


def make_demo_dataset(*, rows: int | None = None, seed: int = 0) -> Table:
    """scikit-learn's breast cancer data (shipped, no download) plus synthetic identity columns.

    Feature names become snake_case (`mean radius` -> `mean_radius`); `rows` takes a seeded
    random subset (all 569 rows when None).
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    if rows is not None:
        if not 1 <= rows <= len(y):
            raise ConfigurationError(f"rows must be in 1..{len(y)}, got {rows}")
        pick = np.sort(np.random.default_rng(seed).permutation(len(y))[:rows])
        x, y = x[pick], y[pick]
    ids = _synthetic.identities(len(y), seed)
    cols: list[Column] = [Column(n, ColumnType.STR) for n in DEMO_IDENTITY_COLUMNS]
    data: dict[str, Any] = dict(ids)
    for j, raw in enumerate(bunch.feature_names):
        name = str(raw).replace(" ", "_")
        cols.append(Column(name, ColumnType.FLOAT))
        data[name] = x[:, j]
    cols.append(Column(DEMO_LABEL, ColumnType.INT))
    data[DEMO_LABEL] = y
    return Table(Schema(tuple(cols)), data)


# -- CSV ---------------------------------------------------------------------------------

def to_csv_bytes(table: Table) -> bytes:
    return _csv.format_csv(table).encode("utf-8")


def from_csv_bytes(data: bytes, schema: Schema | None = None) -> Table:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"CSV is not UTF-8 (byte offset {e.start})") from None
    return _csv.parse_csv(text, schema)


def write_csv(table: Table, path: str | os.PathLike[str]) -> str:
    """Write atomically (temp file + rename); returns the sha256 hex of the bytes written."""
    payload = to_csv_bytes(table)
    write_atomic(path, payload, mode=0o600)
    return hashlib.sha256(payload).hexdigest()


def read_csv(path: str | os.PathLike[str], schema: Schema | None = None) -> Table:
    return read_path(path, schema)[0]


# -- sources -----------------------------------------------------------------------------

def _nonempty(table: Table, source: str) -> Table:
    if table.n_rows == 0:
        raise DataError(f"{source}: no data rows")
    return table


def read_path(path: str | os.PathLike[str], schema: Schema | None = None) -> tuple[Table, IngestReport]:
    p = Path(path)
    try:
        payload = p.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise ConfigurationError(f"is a directory, not a CSV file: {p}") from None
    table = _nonempty(from_csv_bytes(payload, schema), str(p))
    return table, IngestReport(str(p), "file", table.schema, table.n_rows, hashlib.sha256(payload).hexdigest())


def public_url(url: str) -> str:
    """The URL without user info, query or fragment (they may carry tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    shown = f"{parts.scheme}://{host}{parts.path}"
    return shown + ("?<redacted>" if parts.query else "")


def read_url(url: str, schema: Schema | None = None, *, timeout: float = 30.0,
             max_bytes: int = MAX_URL_BYTES) -> tuple[Table, IngestReport]:
    """Read CSV from `file://`, `http://` or `https://`."""
    parts = urllib.parse.urlsplit(url)
    shown = public_url(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file URL with a remote host is not supported: {shown}")
        table, rep = read_path(urllib.request.url2pathname(parts.path), schema)
        return table, IngestReport(shown, "url", rep.schema, rep.rows, rep.sha256)
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"unsupported URL scheme {parts.scheme!r} (file, http, https)")
    headers = {"User-Agent": "mlseal"}
    if parts.username is not None:
        # urllib does not send URL user info itself: move it into a Basic auth header
        cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode("utf-8")).decode("ascii")
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            payload = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise InfrastructureError(f"GET {shown}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise InfrastructureError(f"GET {shown} failed: {reason}") from None
    if len(payload) > max_bytes:
        raise DataError(f"GET {shown}: response larger than {max_bytes} bytes")
    table = _nonempty(from_csv_bytes(payload, schema), shown)
    return table, IngestReport(shown, "url", table.schema, table.n_rows, hashlib.sha256(payload).hexdigest())


def read_postgres(conninfo: str, table: str, *, connect_timeout: int = 10) -> tuple[Table, IngestReport]:
    """Read a whole table (`[schema.]table`); `conninfo` is a libpq string or URI from the caller."""
    from mlseal.ml import _postgres

    shown = _postgres.describe(conninfo, table)
    result = _nonempty(_postgres.read_table(conninfo, table, connect_timeout=connect_timeout), shown)
    return result, IngestReport(shown, "postgresql", result.schema, result.n_rows, None)


def read_source(source: str, *, schema: Schema | None = None,
                conninfo: str | None = None) -> tuple[Table, IngestReport]:
    """Dispatch on the source: `pgtable:[schema.]table` (needs `conninfo`), a URL, or a path."""
    if source.startswith(PG_PREFIX):
        if conninfo is None:
            raise ConfigurationError(f"{source}: a PostgreSQL source needs a connection string")
        table, rep = read_postgres(conninfo, source[len(PG_PREFIX):])
        if schema is not None and table.schema != schema:
            raise DataError(f"{rep.source}: schema {table.schema.to_obj()} does not match the expected one")
        return table, rep
    if urllib.parse.urlsplit(source).scheme in ("file", "http", "https"):
        return read_url(source, schema)
    return read_path(source, schema)


# -- splitting ---------------------------------------------------------------------------

def split(table: Table, *, label: str = DEMO_LABEL, test_fraction: float = 0.25, seed: int = 0) -> tuple[Table, Table]:
    """Seeded split, stratified by `label`; returns (train, test), each in original row order."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must be in (0, 1), got {test_fraction}")
    y = table.column(label)
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        if len(idx) < 2:
            raise DataError(f"label {label!r}: class has {len(idx)} row(s), need at least 2 to split")
        n_test = min(len(idx) - 1, max(1, round(len(idx) * test_fraction)))
        test.append(rng.permutation(idx)[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(table.n_rows, dtype=bool)
    mask[test_idx] = False
    return table.take(np.flatnonzero(mask)), table.take(test_idx)
