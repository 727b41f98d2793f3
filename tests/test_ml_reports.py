"""No report, model file or error message of mlseal.ml carries key bytes or raw PII values."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from mlseal.errors import VerificationError
from mlseal.ml import crypto, data, evaluate, train
from mlseal.ml.anonymize import AnonymizeSpec, anonymize
from mlseal.ml.errors import DataValidationError, GateError
from mlseal.ml.validate import Reference, assess
from mlseal.secrets import envelope

HMAC_KEY = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7")
DATA_KEY = bytes.fromhex("d47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47ad47a")
PII_COLUMNS = ("patient_id", "name", "email", "phone", "national_id", "card_number")


def key_forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode(),
            key.decode("latin-1"), repr(key)]


def test_no_key_or_pii_in_any_output(tmp_path: Path) -> None:
    raw = data.make_demo_dataset(seed=2)
    csv_path = tmp_path / "raw.csv"
    data.write_csv(raw, csv_path)
    table, ingest = data.read_path(csv_path)
    anon, anon_rep = anonymize(table, HMAC_KEY, AnonymizeSpec.demo())
    ref = Reference.from_table(anon)
    tr, te = data.split(anon, seed=0)
    model, train_rep = train.train(tr)
    metrics = evaluate.evaluate(model, te, train=tr)
    blob = crypto.encrypt(data.to_csv_bytes(anon), DATA_KEY, "vault:v1:wrapped")

    texts = [ingest.to_json(), anon_rep.to_json(), ref.to_json(), assess(tr, ref).to_json(), train_rep.to_json(),
             model.to_json().decode(), metrics.to_json(), envelope.read_header(blob)[1].decode(),
             repr(crypto.read_header(blob)), repr(table), repr(anon)]
    # error messages too
    y = np.zeros(anon.n_rows, dtype=np.int64)
    with pytest.raises(DataValidationError) as verr:
        from mlseal.ml.validate import validate

        validate(anon.with_column("label", "int", y), ref)
    with pytest.raises(GateError) as gerr:
        evaluate.check_gates(metrics, {"accuracy": {"min": 1.01}})
    with pytest.raises(VerificationError) as cerr:
        crypto.decrypt(blob, HMAC_KEY)
    texts += [str(verr.value), str(gerr.value), str(cerr.value)]

    secrets = key_forms(HMAC_KEY) + key_forms(DATA_KEY)
    pii = [v for col in PII_COLUMNS for v in raw.column(col)]
    assert len(pii) == 6 * raw.n_rows
    joined = "\n".join(texts)
    for s in secrets:
        assert s not in joined
    leaked = [v for v in pii if v in joined]
    assert leaked == []
    # the anonymised dataset itself holds no raw identifier either
    anon_csv = data.to_csv_bytes(anon).decode()
    assert [v for v in pii if v in anon_csv] == []
    assert all(s not in anon_csv for s in secrets)


def test_leak_check_can_fail() -> None:
    # the same check against the raw dataset must find PII: the scan is not vacuous
    raw = data.make_demo_dataset(rows=5, seed=2)
    text = data.to_csv_bytes(raw).decode()
    assert all(v in text for v in raw.column("email"))
