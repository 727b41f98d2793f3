"""Read one PostgreSQL table into a `Table` (psycopg 3).

The connection string comes from the caller (who got it from Vault) and is never put
into an exception or a report: reports name host, port, database and table only.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ml.errors import DataError
from mlseal.ml.table import Column, ColumnType, Schema, Table

# PostgreSQL type OIDs (pg_type.dat): int2, int4, int8 / float4, float8, numeric.
_INT_OIDS = {20, 21, 23}
_FLOAT_OIDS = {700, 701, 1700}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def describe(conninfo: str, table: str) -> str:
    """`postgresql://host:port/db/table` without user or password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise ConfigurationError("PostgreSQL connection string does not parse") from None
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or ''}/{table}"


def _identifier(table: str) -> sql.Composable:
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise ConfigurationError(f"not a table name: {table!r} (expected [schema.]table)")
    return sql.Identifier(*parts)


def _column(name: str, ctype: ColumnType, values: list[Any]) -> np.ndarray:
    if ctype is ColumnType.FLOAT:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if ctype is ColumnType.INT:
        if any(v is None for v in values):
            raise DataError(f"column {name!r}: NULL in an integer column")
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = ["" if v is None else str(v) for v in values]
    return out


def read_table(conninfo: str, table: str, *, connect_timeout: int = 10) -> Table:
    ident = _identifier(table)
    try:
        with psycopg.connect(conninfo, connect_timeout=connect_timeout) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {}").format(ident))
            desc = cur.description or []
            rows = cur.fetchall()
    except psycopg.errors.UndefinedTable:
        raise ConfigurationError(f"PostgreSQL table {table!r} does not exist") from None
    except psycopg.OperationalError as e:
        # libpq messages name host and user, never the password
        raise InfrastructureError(f"PostgreSQL read of {table!r} failed: {str(e).strip().splitlines()[0]}") from None
    types = [ColumnType.INT if d.type_code in _INT_OIDS else
             ColumnType.FLOAT if d.type_code in _FLOAT_OIDS else ColumnType.STR for d in desc]
    schema = Schema(tuple(Column(d.name, t) for d, t in zip(desc, types, strict=True)))
    data = {c.name: _column(c.name, c.type, [r[i] for r in rows]) for i, c in enumerate(schema.columns)}
    return Table(schema, data)
