"""mlseal.ml.crypto: dataset glue over mlseal.secrets.envelope (AES-256-GCM), tamper detection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ml import crypto
from mlseal.secrets import envelope, open_secret_source

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
PLAIN = b"id,x,label\na,1.5,0\nb,2.5,1\n"
WRAPPED = "vault:v1:d3JhcHBlZC1rZXk="
FIXED = len(crypto.MAGIC) + 1 + 4  # magic | version | header length


def blob() -> bytes:
    return crypto.encrypt(PLAIN, KEY, WRAPPED)


def header_len(b: bytes) -> int:
    return int.from_bytes(b[len(crypto.MAGIC) + 1:FIXED], "big")


def test_round_trip_and_header() -> None:
    b = blob()
    assert b.startswith(crypto.MAGIC)
    assert crypto.decrypt(b, KEY) == PLAIN
    h = crypto.read_header(b)
    assert h.wrapped_key == WRAPPED and h.key_name == "mlseal-data" and len(h.nonce) == 12
    assert PLAIN not in b and KEY not in b
    assert blob() != b  # fresh nonce each time


def test_with_the_dev_secret_source(tmp_path: Path) -> None:
    # the pipeline's flow: data key from the source, unwrap through the source on read
    src = open_secret_source(dev_dir=tmp_path, env={})
    dk = src.data_key()
    b = crypto.encrypt(PLAIN, dk.plaintext.reveal(), dk.wrapped, key_name=dk.key_name)
    h = crypto.read_header(b)
    assert crypto.decrypt(b, src.unwrap_data_key(h.wrapped_key, h.key_name).reveal()) == PLAIN
    # one format in the project: the shared envelope reads it with the dataset associated data
    assert envelope.decrypt(b, src, b"mlseal.ml.dataset.v1\x00text/csv") == PLAIN


def test_domain_separation(tmp_path: Path) -> None:
    src = open_secret_source(dev_dir=tmp_path, env={})
    dk = src.data_key()
    other_kind = envelope.encrypt(PLAIN, dk)  # a non-dataset envelope under the same key
    with pytest.raises(VerificationError):
        crypto.decrypt(other_kind, dk.plaintext.reveal())
    as_json = crypto.encrypt(PLAIN, KEY, WRAPPED, content_type="application/json")
    with pytest.raises(VerificationError):
        crypto.decrypt(as_json, KEY)  # decrypting as text/csv
    assert crypto.decrypt(as_json, KEY, content_type="application/json") == PLAIN


def test_empty_plaintext() -> None:
    assert crypto.decrypt(crypto.encrypt(b"", KEY, WRAPPED), KEY) == b""


def test_wrong_key() -> None:
    with pytest.raises(VerificationError, match="does not authenticate") as exc:
        crypto.decrypt(blob(), OTHER)
    assert KEY.hex() not in str(exc.value) and OTHER.hex() not in str(exc.value)


@pytest.mark.parametrize("where", ["version", "header", "ciphertext", "tag"])
def test_bit_flips_detected(where: str) -> None:
    b = bytearray(blob())
    hlen = header_len(bytes(b))
    pos = {"version": len(crypto.MAGIC), "header": FIXED + hlen - 3, "ciphertext": FIXED + hlen + 2,
           "tag": len(b) - 1}[where]
    b[pos] ^= 0x01
    with pytest.raises(VerificationError):
        crypto.decrypt(bytes(b), KEY)


def test_swapped_wrapped_key_detected() -> None:
    b = blob()
    swapped = b.replace(WRAPPED.encode(), b"vault:v1:b3RoZXIta2V5LXh4")
    assert len(swapped) == len(b)  # same length, so only the authentication can notice
    with pytest.raises(VerificationError, match="does not authenticate"):
        crypto.decrypt(swapped, KEY)


@pytest.mark.parametrize(("mangle", "match"), [
    (lambda b: b[:-1], "does not authenticate"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:5], "bad magic"),
    (lambda b: b"X" * len(crypto.MAGIC) + b[len(crypto.MAGIC):], "bad magic"),
    (lambda b: b[:FIXED - 4] + (10**6).to_bytes(4, "big") + b[FIXED:], "truncated"),
])
def test_truncation_and_framing(mangle: Callable[[bytes], bytes], match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        crypto.decrypt(mangle(blob()), KEY)


def _with_header(obj: dict[str, object]) -> bytes:
    raw = json.dumps(obj).encode()
    return crypto.MAGIC + b"\x01" + len(raw).to_bytes(4, "big") + raw + b"\x00" * 32


def test_malformed_headers() -> None:
    with pytest.raises(VerificationError, match="malformed"):
        crypto.decrypt(_with_header({"alg": "A256GCM"}), KEY)
    with pytest.raises(VerificationError, match="unsupported alg"):
        crypto.read_header(_with_header({"alg": "NONE", "key_name": "k", "nonce": "AAAAAAAAAAAAAAAA", "wrapped": "w"}))
    with pytest.raises(VerificationError, match="nonce"):
        crypto.decrypt(_with_header({"alg": "A256GCM", "key_name": "k", "nonce": "AAAA", "wrapped": "w"}), KEY)


def test_key_and_argument_checks_do_not_echo_key() -> None:
    with pytest.raises(ConfigurationError, match=r"32 bytes .* got 16") as exc:
        crypto.encrypt(PLAIN, KEY[:16], WRAPPED)
    assert KEY[:16].hex() not in str(exc.value)
    with pytest.raises(ConfigurationError):
        crypto.decrypt(blob(), "k" * 32)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wrapped_key"):
        crypto.encrypt(PLAIN, KEY, "")
    with pytest.raises(ConfigurationError, match="content_type"):
        crypto.encrypt(PLAIN, KEY, WRAPPED, content_type="")


def test_file_helpers(tmp_path: Path) -> None:
    src, dst = tmp_path / "d.csv", tmp_path / "d.csv.enc"
    src.write_bytes(PLAIN)
    crypto.encrypt_file(src, dst, KEY, WRAPPED)
    assert crypto.decrypt_file(dst, KEY) == PLAIN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "d.csv.enc"]
