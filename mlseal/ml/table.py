"""A small column table (numpy arrays) with a typed schema; pandas is not needed.

Three column types: `float` (float64), `int` (int64) and `str` (object array of str).
A `Table` is immutable by convention: every operation returns a new one and never
writes into the caller's arrays.

    >>> import numpy as np
    >>> from mlseal.ml.table import Table
    >>> t = Table.from_columns({"age": np.array([30, 41]), "name": ["a", "b"]})
    >>> t.schema.to_obj()
    [{'name': 'age', 'type': 'int'}, {'name': 'name', 'type': 'str'}]
    >>> t.drop(["name"]).schema.names
    ('age',)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlseal.ml.errors import DataError

__all__ = ["Column", "ColumnType", "Schema", "Table"]


class ColumnType(enum.StrEnum):
    FLOAT = "float"
    INT = "int"
    STR = "str"

    @property
    def numeric(self) -> bool:
        return self is not ColumnType.STR


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType

    def to_obj(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type.value}


@dataclass(frozen=True)
class Schema:
    """Ordered column names and types."""

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"duplicate column names: {dupes}")
        if any(not n for n in names):
            raise DataError("empty column name")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def type_of(self, name: str) -> ColumnType:
        for c in self.columns:
            if c.name == name:
                return c.type
        raise DataError(f"missing column {name!r} (have {len(self.columns)} columns)")

    def to_obj(self) -> list[dict[str, str]]:
        return [c.to_obj() for c in self.columns]

    @classmethod
    def from_obj(cls, obj: object) -> Schema:
        """Parse `[{"name": ..., "type": "float|int|str"}, ...]` (e.g. from a JSON file)."""
        if not isinstance(obj, list):
            raise DataError(f"schema must be a list of columns, got {type(obj).__name__}")
        cols = []
        for i, item in enumerate(obj):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise DataError(f"schema column {i}: expected an object with a string 'name'")
            try:
                ctype = ColumnType(str(item.get("type")))
            except ValueError:
                raise DataError(f"schema column {item['name']!r}: unknown type {item.get('type')!r}") from None
            cols.append(Column(item["name"], ctype))
        return cls(tuple(cols))

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str | ColumnType]]) -> Schema:
        return cls(tuple(Column(n, ColumnType(t)) for n, t in pairs))


def _coerce(name: str, ctype: ColumnType, values: Any) -> np.ndarray:
    """Return a fresh array of the column's type, or raise DataError naming the column."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"column {name!r}: expected one dimension, got shape {arr.shape}")
    if ctype is ColumnType.STR:
        if arr.dtype.kind not in "UO":
            raise DataError(f"column {name!r}: expected str values, got dtype {arr.dtype}")
        out = np.empty(arr.shape[0], dtype=object)
        for i, v in enumerate(arr.tolist()):
            if not isinstance(v, str):
                raise DataError(f"column {name!r} row {i}: expected str, got {type(v).__name__}")
            out[i] = v
        return out
    if arr.dtype.kind not in "iub" + ("f" if ctype is ColumnType.FLOAT else ""):
        raise DataError(f"column {name!r}: expected {ctype.value} values, got dtype {arr.dtype}")
    return arr.astype(np.float64 if ctype is ColumnType.FLOAT else np.int64, copy=True)


def _infer(values: Any) -> ColumnType:
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        return ColumnType.INT
    if arr.dtype.kind == "f":
        return ColumnType.FLOAT
    return ColumnType.STR


class Table:
    """Named, typed columns of equal length."""

    __slots__ = ("_cols", "schema")

    def __init__(self, schema: Schema, columns: Mapping[str, Any]) -> None:
        missing = [n for n in schema.names if n not in columns]
        if missing:
            raise DataError(f"missing columns {missing}")
        extra = sorted(set(columns) - set(schema.names))
        if extra:
            raise DataError(f"columns not in schema: {extra}")
        cols = {c.name: _coerce(c.name, c.type, columns[c.name]) for c in schema.columns}
        lengths = {len(a) for a in cols.values()}
        if len(lengths) > 1:
            raise DataError(f"columns have different lengths: {sorted(lengths)}")
        for a in cols.values():
            a.setflags(write=False)
        self.schema = schema
        self._cols = cols

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], schema: Schema | None = None) -> Table:
        """Build a table; without a schema, types are inferred from the array dtypes."""
        if schema is None:
            schema = Schema(tuple(Column(n, _infer(v)) for n, v in columns.items()))
        return cls(schema, columns)

    @property
    def n_rows(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    @property
    def names(self) -> tuple[str, ...]:
        return self.schema.names

    def column(self, name: str) -> np.ndarray:
        if name not in self._cols:
            raise DataError(f"missing column {name!r}")
        return self._cols[name]

    def require(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self._cols]
        if missing:
            raise DataError(f"missing columns {missing}")

    def select(self, names: Sequence[str]) -> Table:
        self.require(names)
        schema = Schema(tuple(Column(n, self.schema.type_of(n)) for n in names))
        return Table(schema, {n: self._cols[n] for n in names})

    def drop(self, names: Iterable[str]) -> Table:
        gone = set(names)
        self.require(gone)
        return self.select([n for n in self.names if n not in gone])

    def with_column(self, name: str, ctype: ColumnType | str, values: Any) -> Table:
        """Replace (in place of the old position) or append a column."""
        col = Column(name, ColumnType(ctype))
        if name in self._cols:
            cols = tuple(col if c.name == name else c for c in self.schema.columns)
        else:
            cols = (*self.schema.columns, col)
        data = dict(self._cols)
        data[name] = values
        return Table(Schema(cols), data)

    def take(self, indices: Any) -> Table:
        idx = np.asarray(indices, dtype=np.int64)
        return Table(self.schema, {n: a[idx] for n, a in self._cols.items()})

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """The named numeric columns as a float64 (rows x len(names)) matrix."""
        self.require(names)
        bad = [n for n in names if not self.schema.type_of(n).numeric]
        if bad:
            raise DataError(f"columns {bad} are not numeric")
        if not names:
            return np.zeros((self.n_rows, 0))
        return np.column_stack([self._cols[n].astype(np.float64) for n in names])

    def numeric_columns(self, exclude: Iterable[str] = ()) -> tuple[str, ...]:
        skip = set(exclude)
        return tuple(c.name for c in self.schema.columns if c.type.numeric and c.name not in skip)

    def rows(self) -> list[tuple[Any, ...]]:
        """Rows as tuples of Python values (for hashing and duplicate checks)."""
        lists = [self._cols[n].tolist() for n in self.names]
        return list(zip(*lists, strict=True)) if lists else []

    def equals(self, other: Table) -> bool:
        if self.schema != other.schema:
            return False
        return all(np.array_equal(self._cols[n], other._cols[n], equal_nan=self.schema.type_of(n)
                                  is ColumnType.FLOAT) for n in self.names)

    def __repr__(self) -> str:  # never the data: a repr may end up in a log
        return f"Table(rows={self.n_rows}, columns={len(self.names)})"
