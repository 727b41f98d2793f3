"""mlseal.ml.crypto: AES-256-GCM dataset envelope, authenticated header, tamper detection."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ml import crypto

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
PLAIN = b"id,x,label\na,1.5,0\nb,2.5,1\n"
WRAPPED = "vault:v1:d3JhcHBlZC1rZXk="


def blob() -> bytes:
    return crypto.encrypt(PLAIN, KEY, WRAPPED, nonce=b"\x07" * 12)


def test_round_trip_and_header() -> None:
    b = crypto.encrypt(PLAIN, KEY, WRAPPED)
    assert crypto.decrypt(b, KEY) == PLAIN
    h = crypto.read_header(b)
    assert h.wrapped_key == WRAPPED and h.algorithm == "AES-256-GCM" and len(h.nonce) == 12
    assert PLAIN not in b and KEY not in b
    assert crypto.encrypt(PLAIN, KEY, WRAPPED) != b  # fresh nonce each time


def test_empty_plaintext() -> None:
    assert crypto.decrypt(crypto.encrypt(b"", KEY, WRAPPED), KEY) == b""


def test_wrong_key() -> None:
    with pytest.raises(VerificationError, match="failed authentication") as exc:
        crypto.decrypt(blob(), OTHER)
    assert KEY.hex() not in str(exc.value) and OTHER.hex() not in str(exc.value)


@pytest.mark.parametrize("where", ["header", "ciphertext", "tag"])
def test_bit_flips_detected(where: str) -> None:
    b = bytearray(blob())
    hlen = struct.unpack(">I", b[8:12])[0]
    pos = {"header": 12 + hlen - 3, "ciphertext": 12 + hlen + 2, "tag": len(b) - 1}[where]
    b[pos] ^= 0x01
    with pytest.raises(VerificationError):
        crypto.decrypt(bytes(b), KEY)


def test_swapped_wrapped_key_detected() -> None:
    b = blob()
    swapped = b.replace(WRAPPED.encode(), b"vault:v1:b3RoZXIta2V5LXh4")
    assert len(swapped) == len(b)  # same length, so only the authentication can notice
    with pytest.raises(VerificationError, match="failed authentication"):
        crypto.decrypt(swapped, KEY)


@pytest.mark.parametrize(("mangle", "match"), [
    (lambda b: b[:-1], "failed authentication"),
    (lambda b: b[:20], "truncated"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: b[:8] + struct.pack(">I", 10**6) + b[12:], "header length"),
])
def test_truncation_and_framing(mangle: object, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        crypto.decrypt(mangle(blob()), KEY)  # type: ignore[operator]


def _with_header(obj: dict[str, object]) -> bytes:
    raw = json.dumps(obj).encode()
    return crypto.MAGIC + struct.pack(">I", len(raw)) + raw + b"\x00" * 32


def test_malformed_headers() -> None:
    with pytest.raises(VerificationError, match="malformed"):
        crypto.decrypt(_with_header({"alg": "AES-256-GCM"}), KEY)
    with pytest.raises(VerificationError, match="unsupported encryption"):
        crypto.decrypt(_with_header({"alg": "NONE", "v": 1, "nonce": "AAAAAAAAAAAAAAAA", "wrapped_key": "w",
                                     "content_type": "text/csv"}), KEY)
    with pytest.raises(VerificationError, match="nonce is 3 bytes"):
        crypto.decrypt(_with_header({"alg": "AES-256-GCM", "v": 1, "nonce": "AAAA", "wrapped_key": "w",
                                     "content_type": "text/csv"}), KEY)


def test_key_and_argument_checks_do_not_echo_key() -> None:
    with pytest.raises(ConfigurationError, match=r"32 bytes .* got 16") as exc:
        crypto.encrypt(PLAIN, KEY[:16], WRAPPED)
    assert KEY[:16].hex() not in str(exc.value)
    with pytest.raises(ConfigurationError):
        crypto.decrypt(blob(), "k" * 32)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wrapped_key"):
        crypto.encrypt(PLAIN, KEY, "")
    with pytest.raises(ConfigurationError, match="nonce"):
        crypto.encrypt(PLAIN, KEY, WRAPPED, nonce=b"short")


def test_file_helpers(tmp_path: Path) -> None:
    src, dst = tmp_path / "d.csv", tmp_path / "d.csv.enc"
    src.write_bytes(PLAIN)
    crypto.encrypt_file(src, dst, KEY, WRAPPED)
    assert crypto.decrypt_file(dst, KEY) == PLAIN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "d.csv.enc"]
