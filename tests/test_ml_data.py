"""mlseal.ml.table and mlseal.ml.data: tables, CSV, sources, demo dataset, split."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ml import data
from mlseal.ml._synthetic import luhn_check_digit
from mlseal.ml.anonymize import luhn_valid
from mlseal.ml.errors import DataError
from mlseal.ml.table import ColumnType, Schema, Table


@pytest.fixture(scope="module")
def demo() -> Table:
    return data.make_demo_dataset(seed=0)


def small() -> Table:
    return Table.from_columns({"id": np.array(["a", "b", "c"], dtype=object), "x": np.array([1.5, -2.0, 3.25]),
                               "n": np.array([1, 2, 3]), "label": np.array([0, 1, 0])})


# -- Table ---------------------------------------------------------------------------------

def test_table_schema_inferred_and_columns_read_only() -> None:
    t = small()
    assert t.schema.to_obj()[:2] == [{"name": "id", "type": "str"}, {"name": "x", "type": "float"}]
    with pytest.raises(ValueError):
        t.column("x")[0] = 9.0


def test_table_rejects_mismatched_lengths_and_types() -> None:
    with pytest.raises(DataError, match="different lengths"):
        Table.from_columns({"a": np.array([1, 2]), "b": np.array([1])})
    with pytest.raises(DataError, match="expected int"):
        Table(Schema.of([("a", "int")]), {"a": np.array([1.5])})
    with pytest.raises(DataError, match="expected str"):
        Table(Schema.of([("a", "str")]), {"a": np.array([1, 2])})
    with pytest.raises(DataError, match="duplicate column"):
        Schema.of([("a", "int"), ("a", "str")])


def test_table_missing_column_named() -> None:
    with pytest.raises(DataError, match="'nope'"):
        small().column("nope")
    with pytest.raises(DataError, match="nope"):
        small().drop(["nope"])


def test_table_repr_has_no_values() -> None:
    assert "a" not in repr(small()).replace("Table", "")


def test_schema_from_obj_bad_type() -> None:
    assert Schema.from_obj([{"name": "x", "type": "float"}]) == Schema.of([("x", "float")])
    with pytest.raises(DataError, match="unknown type"):
        Schema.from_obj([{"name": "x", "type": "complex"}])
    with pytest.raises(DataError):
        Schema.from_obj({"name": "x"})


def test_matrix_refuses_text_columns() -> None:
    with pytest.raises(DataError, match="not numeric"):
        small().matrix(["x", "id"])
    assert small().matrix(["x", "n"]).shape == (3, 2)


# -- CSV -----------------------------------------------------------------------------------

def test_csv_round_trip_exact(demo: Table) -> None:
    raw = data.to_csv_bytes(demo)
    back = data.from_csv_bytes(raw)
    assert back.schema == demo.schema
    assert back.equals(demo)
    assert data.to_csv_bytes(back) == raw  # deterministic bytes


def test_csv_inference_keeps_identifiers_as_text() -> None:
    text = "zip,card,amount,count,empty\n01234,4111111111111111111111,1.5,3,\n99999,4111111111111111111112,2,4,\n"
    t = data.from_csv_bytes(text.encode())
    types = {c.name: c.type for c in t.schema.columns}
    assert types == {"zip": ColumnType.STR, "card": ColumnType.STR, "amount": ColumnType.FLOAT,
                     "count": ColumnType.INT, "empty": ColumnType.STR}
    assert t.column("zip")[0] == "01234"


def test_csv_with_schema_errors_name_column_not_value() -> None:
    schema = Schema.of([("a", "int"), ("b", "str")])
    assert data.from_csv_bytes(b"a,b\n1,x\n", schema).column("a").tolist() == [1]
    with pytest.raises(DataError, match="column 'a' line 3: not a valid int") as exc:
        data.from_csv_bytes(b"a,b\n1,x\nsecret-value,y\n", schema)
    assert "secret-value" not in str(exc.value)
    with pytest.raises(DataError, match=r"missing \['b'\]"):
        data.from_csv_bytes(b"a\n1\n", schema)
    with pytest.raises(DataError, match="order differs"):
        data.from_csv_bytes(b"b,a\nx,1\n", schema)


def test_csv_bad_input() -> None:
    with pytest.raises(DataError, match="no header"):
        data.from_csv_bytes(b"")
    with pytest.raises(DataError, match="3 fields, header has 2"):
        data.from_csv_bytes(b"a,b\n1,2,3\n")
    with pytest.raises(DataError, match="not UTF-8"):
        data.from_csv_bytes(b"a\n\xff\n")


def test_write_csv_atomic_and_digest(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "d.csv"
    digest = data.write_csv(small(), p)
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert [f.name for f in tmp_path.iterdir()] == ["d.csv"]


# -- sources -------------------------------------------------------------------------------

def test_read_path_report(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    data.write_csv(small(), p)
    t, rep = data.read_path(p)
    assert t.equals(small())
    obj = rep.to_obj()
    assert obj["kind"] == "file" and obj["rows"] == 3 and obj["columns"] == 4
    assert '"a"' not in rep.to_json().replace('"name":"a"', "")


def test_read_path_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        data.read_path(tmp_path / "nope.csv")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        data.read_path(tmp_path / "h.csv")


def test_read_file_url(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    data.write_csv(small(), p)
    t, rep = data.read_source(p.as_uri())
    assert t.equals(small()) and rep.kind == "url" and rep.source.startswith("file://")


seen: list[str | None] = []  # Authorization headers the test server received


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("www")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root
    srv.shutdown()
    srv.server_close()


def test_read_http_url_strips_credentials_and_query(http_root: tuple[str, Path]) -> None:
    base, root = http_root
    data.write_csv(small(), root / "d.csv")
    seen.clear()
    url = base.replace("http://", "http://user:pa55word@") + "/d.csv?token=tok123"
    t, rep = data.read_source(url)
    assert t.equals(small())
    assert rep.source == base + "/d.csv?<redacted>"
    assert seen == ["Basic dXNlcjpwYTU1d29yZA=="]  # user:pa55word
    assert "pa55word" not in rep.to_json() and "tok123" not in rep.to_json()


def test_read_http_errors(http_root: tuple[str, Path]) -> None:
    base, root = http_root
    with pytest.raises(InfrastructureError, match="HTTP 404"):
        data.read_url(base + "/missing.csv")
    (root / "big.csv").write_text("a\n" + "1\n" * 100)
    with pytest.raises(DataError, match="larger than"):
        data.read_url(base + "/big.csv", max_bytes=50)
    with pytest.raises(InfrastructureError):
        data.read_url("http://127.0.0.1:9/x.csv", timeout=2)
    with pytest.raises(ConfigurationError, match="unsupported URL scheme"):
        data.read_url("ftp://127.0.0.1/x.csv")


# -- PostgreSQL ----------------------------------------------------------------------------

PG = os.environ.get("MLSEAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect(PG, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError:
        if os.environ.get("MLSEAL_REQUIRE_PG") == "1":
            pytest.fail("PostgreSQL required but not reachable")
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    with conn:
        conn.execute("DROP SCHEMA IF EXISTS mlseal_ml_test CASCADE")
        conn.execute("CREATE SCHEMA mlseal_ml_test")
        conn.execute("CREATE TABLE mlseal_ml_test.patients (id text, age integer, score double precision, "
                     "weight numeric, label bigint)")
        conn.execute("INSERT INTO mlseal_ml_test.patients VALUES ('p1', 40, 1.5, 70.25, 0), "
                     "('p2', 51, NULL, 80.5, 1), (NULL, 33, -2.0, 60, 1)")
        conn.execute("CREATE TABLE mlseal_ml_test.empty (a integer)")
    yield PG
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS mlseal_ml_test CASCADE")


@pytest.mark.postgres
def test_read_postgres_table(pg: str) -> None:
    t, rep = data.read_source("pgtable:mlseal_ml_test.patients", conninfo=pg)
    assert {c.name: c.type.value for c in t.schema.columns} == {
        "id": "str", "age": "int", "score": "float", "weight": "float", "label": "int"}
    assert t.column("age").tolist() == [40, 51, 33]
    assert np.isnan(t.column("score")[1]) and t.column("id")[2] == ""
    assert rep.kind == "postgresql" and rep.rows == 3
    assert rep.source == "postgresql://127.0.0.1:5432/test/mlseal_ml_test.patients"


@pytest.mark.postgres
def test_read_postgres_errors_hide_password(pg: str) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        data.read_postgres(pg, "mlseal_ml_test.nope")
    with pytest.raises(ConfigurationError, match="not a table name"):
        data.read_postgres(pg, "x; DROP TABLE y")
    with pytest.raises(DataError, match="no data rows"):
        data.read_postgres(pg, "mlseal_ml_test.empty")
    with pytest.raises(ConfigurationError, match="connection string"):
        data.read_source("pgtable:mlseal_ml_test.patients")
    bad = "postgresql://postgres:hunter2pw@127.0.0.1:1/test"
    with pytest.raises(InfrastructureError) as exc:
        data.read_postgres(bad, "mlseal_ml_test.patients", connect_timeout=2)
    assert "hunter2pw" not in str(exc.value)
    from mlseal.ml import _postgres

    assert _postgres.describe(bad, "t") == "postgresql://127.0.0.1:1/test/t"


# -- demo dataset, split -------------------------------------------------------------------

def test_demo_dataset_shape_and_determinism(demo: Table) -> None:
    assert demo.n_rows == 569
    assert set(data.DEMO_IDENTITY_COLUMNS) <= set(demo.names)
    assert len(demo.numeric_columns(exclude=["label"])) == 30
    assert "mean_radius" in demo.names
    again = data.make_demo_dataset(seed=0)
    assert data.to_csv_bytes(again) == data.to_csv_bytes(demo)
    other = data.make_demo_dataset(seed=1)
    assert other.column("email").tolist() != demo.column("email").tolist()
    assert data.make_demo_dataset(rows=10, seed=3).n_rows == 10
    with pytest.raises(ConfigurationError):
        data.make_demo_dataset(rows=0)


def test_demo_cards_pass_luhn_and_notes_hold_pii(demo: Table) -> None:
    cards = [c.replace(" ", "").replace("-", "") for c in demo.column("card_number")]
    assert all(luhn_valid(c) and len(c) == 16 for c in cards)
    notes = " ".join(demo.column("notes"))
    assert "@" in notes and "lab order" in notes and "Billing card" in notes


def test_luhn_check_digit_known_vector() -> None:
    assert luhn_check_digit("7992739871") == "3"  # the textbook example 79927398713
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_split_stratified_seeded(demo: Table) -> None:
    tr, te = data.split(demo, test_fraction=0.25, seed=0)
    assert tr.n_rows + te.n_rows == demo.n_rows
    assert not set(tr.column("patient_id")) & set(te.column("patient_id"))
    frac = lambda t: float(np.mean(t.column("label")))  # noqa: E731
    assert abs(frac(tr) - frac(te)) < 0.02
    _, te2 = data.split(demo, test_fraction=0.25, seed=0)
    assert te2.column("patient_id").tolist() == te.column("patient_id").tolist()
    _, te3 = data.split(demo, test_fraction=0.25, seed=1)
    assert te3.column("patient_id").tolist() != te.column("patient_id").tolist()


def test_split_bad_input() -> None:
    with pytest.raises(ConfigurationError):
        data.split(small(), test_fraction=1.0)
    with pytest.raises(DataError, match="need at least 2"):
        data.split(small())  # label 1 has a single row
    with pytest.raises(DataError, match="missing column"):
        data.split(small(), label="nope")


def test_table_select_with_column_take() -> None:
    t = small()
    assert t.select(["x", "id"]).names == ("x", "id")
    t2 = t.with_column("x", "int", np.array([7, 8, 9]))
    assert t2.names == t.names and t2.schema.type_of("x") is ColumnType.INT
    assert t.schema.type_of("x") is ColumnType.FLOAT  # the original is unchanged
    t3 = t.with_column("new", "str", np.array(["p", "q", "r"], dtype=object))
    assert t3.names[-1] == "new"
    assert t.take([2, 0]).column("id").tolist() == ["c", "a"]
    with pytest.raises(DataError, match="different lengths"):
        t.with_column("new", "int", np.array([1]))


def test_read_csv_with_schema(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    data.write_csv(small(), p)
    assert data.read_csv(p, small().schema).equals(small())
    wrong = Schema.of([("id", "str"), ("x", "int"), ("n", "int"), ("label", "int")])
    with pytest.raises(DataError, match="column 'x' line 2: not a valid int"):
        data.read_csv(p, wrong)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.text(max_size=12), st.floats(allow_nan=True, allow_infinity=True),
                               st.integers(min_value=-(2**62), max_value=2**62)), min_size=1, max_size=8))
def test_csv_round_trip_property(rows: list[tuple[str, float, int]]) -> None:
    schema = Schema.of([("s", "str"), ("f", "float"), ("i", "int")])
    t = Table(schema, {"s": np.array([r[0] for r in rows], dtype=object), "f": np.array([r[1] for r in rows]),
                       "i": np.array([r[2] for r in rows], dtype=np.int64)})
    back = data.from_csv_bytes(data.to_csv_bytes(t), schema)
    assert back.equals(t)
