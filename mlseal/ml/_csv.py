"""CSV text <-> Table, with type inference or a given schema.

Values that fail to parse are reported by column and line, never by value: a CSV cell
may hold personal data.
"""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np

from mlseal.ml.errors import DataError
from mlseal.ml.table import Column, ColumnType, Schema, Table

# Inference is conservative: integers without leading zeros ("007" stays a str) and at
# most 18 digits (longer runs are identifiers). With a schema, any int64 value parses.
_INT = re.compile(r"[+-]?(?:0|[1-9]\d{0,17})")
_ANY_INT = re.compile(r"[+-]?\d{1,19}")
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT = re.compile(r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf)", re.IGNORECASE)


def _is_int(v: str) -> bool:
    return _INT.fullmatch(v) is not None


def _is_int64(v: str) -> bool:
    return _ANY_INT.fullmatch(v) is not None and _INT64[0] <= int(v) <= _INT64[1]


def _is_float(v: str) -> bool:
    if _FLOAT.fullmatch(v) is None:
        return False
    # a long bare digit run is an identifier (card, account), not a number
    return _is_int(v) or not v.lstrip("+-").isdigit()


def _infer(values: list[str]) -> ColumnType:
    present = [v for v in values if v != ""]
    if present and len(present) == len(values) and all(_is_int(v) for v in present):
        return ColumnType.INT
    if present and all(_is_float(v) for v in present):
        return ColumnType.FLOAT
    return ColumnType.STR


def _parse(name: str, ctype: ColumnType, values: list[str]) -> np.ndarray:
    if ctype is ColumnType.STR:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    ok = _is_int64 if ctype is ColumnType.INT else (lambda v: v == "" or _is_float(v))
    for line, v in enumerate(values, start=2):
        if not ok(v):
            raise DataError(f"column {name!r} line {line}: not a valid {ctype.value}")
    if ctype is ColumnType.INT:
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array([float(v) if v else math.nan for v in values], dtype=np.float64)


def parse_csv(text: str, schema: Schema | None = None) -> Table:
    """Parse CSV text with a header row. With `schema`, the header must name exactly its columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("empty CSV: no header row") from None
    except csv.Error as e:
        raise DataError(f"malformed CSV header: {e}") from None
    width = len(header)
    cols: list[list[str]] = [[] for _ in header]
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                raise DataError(f"CSV line {reader.line_num}: {len(row)} fields, header has {width}")
            for i, v in enumerate(row):
                cols[i].append(v)
    except csv.Error as e:
        raise DataError(f"malformed CSV at line {reader.line_num}: {e}") from None
    if schema is None:
        schema = Schema(tuple(Column(n, _infer(c)) for n, c in zip(header, cols, strict=True)))
    elif tuple(header) != schema.names:
        missing = [n for n in schema.names if n not in header]
        extra = [n for n in header if n not in schema.names]
        raise DataError(f"CSV header does not match schema: missing {missing}, unexpected {extra}"
                        + ("" if missing or extra else ", order differs"))
    by_name = dict(zip(header, cols, strict=True))
    data = {c.name: _parse(c.name, c.type, by_name[c.name]) for c in schema.columns}
    return Table(schema, data)


def _cell(ctype: ColumnType, v: object) -> str:
    if ctype is ColumnType.FLOAT:
        f = float(v)  # type: ignore[arg-type]
        return "" if math.isnan(f) else repr(f)
    return str(v)


def format_csv(table: Table) -> str:
    """Deterministic CSV text: header row, `\\n` line ends, floats in round-trip form."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    # QUOTE_MINIMAL quotes only the delimiter, quote char and "\n" (the line terminator);
    # a row with a bare "\r" is written fully quoted so that it reads back unchanged.
    w_all = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    types = [table.schema.type_of(n) for n in table.names]
    for cells in ([*table.names], *([_cell(t, v) for t, v in zip(types, row, strict=True)] for row in table.rows())):
        (w_all if any("\r" in c for c in cells) else w).writerow(cells)
    return buf.getvalue()
