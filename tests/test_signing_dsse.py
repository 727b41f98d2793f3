"""DSSE against the spec's published test vectors (secure-systems-lab/dsse).

protocol.md "Test Vectors": payload "hello world", type http://example.com/HelloWorld,
ECDSA P-256 / SHA-256 with deterministic RFC 6979 nonces, signature as raw r||s.
testvectors/vectors.json: PAE byte strings for edge cases (non-ASCII type, empty body).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from mlseal.errors import VerificationError
from mlseal.signing import dsse
from mlseal.signing.keys import PublicKeyVerifier

# protocol.md, "Test Vectors"
X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
D = 97358161215184420915383655311931858321456579547487070936769975997791359926199
ENVELOPE = (
    b'{"payload": "aGVsbG8gd29ybGQ=",\n'
    b' "payloadType": "http://example.com/HelloWorld",\n'
    b' "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAaj'
    b'abZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="}]}'
)
PAE = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


class RawRSVerifier:
    """The vector's signatures are raw r||s (32+32 bytes); ours are DER."""

    def __init__(self, inner: PublicKeyVerifier) -> None:
        self.inner = inner
        self.key_id = inner.key_id

    def verify(self, data: bytes, signature: bytes) -> None:
        if len(signature) != 64:
            raise VerificationError(f"raw signature has {len(signature)} bytes")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        self.inner.verify(data, encode_dss_signature(r, s))


def vector_key() -> PublicKeyVerifier:
    return PublicKeyVerifier(ec.EllipticCurvePublicNumbers(X, Y, ec.SECP256R1()).public_key(), name="vector")


def test_pae_matches_spec() -> None:
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == PAE


def test_published_envelope_verifies() -> None:
    env = dsse.parse(ENVELOPE)
    v = dsse.verify(env, [RawRSVerifier(vector_key())], payload_type="http://example.com/HelloWorld")
    assert v.payload == b"hello world"


def test_deterministic_signature_reproduces_the_vector() -> None:
    private = ec.derive_private_key(D, ec.SECP256R1())
    assert private.public_key().public_numbers() == ec.EllipticCurvePublicNumbers(X, Y, ec.SECP256R1())
    der = private.sign(PAE, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert raw == dsse.parse(ENVELOPE).signatures[0].sig


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.replace(b"aGVsbG8gd29ybGQ=", base64.b64encode(b"hello world!")),
        lambda e: e.replace(b"HelloWorld", b"HelloWorle"),
        lambda e: e.replace(b"A3Jq", b"B3Jq"),
    ],
    ids=["payload", "payload-type", "signature"],
)
def test_published_envelope_mutations_fail(mutate: Callable[[bytes], bytes]) -> None:
    env = dsse.parse(mutate(ENVELOPE))
    with pytest.raises(VerificationError):
        dsse.verify(env, [RawRSVerifier(vector_key())])


def test_payload_type_is_enforced() -> None:
    with pytest.raises(VerificationError, match=r"payloadType is 'http://example\.com/HelloWorld'"):
        dsse.verify(dsse.parse(ENVELOPE), [RawRSVerifier(vector_key())], payload_type="application/vnd.in-toto+json")


# testvectors/vectors.json: "non-ascii-payload-type" and "empty-payload" PAE encodings
@pytest.mark.parametrize(
    ("ptype", "body", "pae_hex"),
    [
        (
            "application/vnd.exämple+json",
            b'{"_type":"https://in-toto.io/Statement/v1"}',
            "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e203433207b225f74"
            "797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d",
        ),
        (
            "application/vnd.in-toto+json",
            b"",
            "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020",
        ),
    ],
    ids=["non-ascii-type", "empty-body"],
)
def test_pae_edge_cases(ptype: str, body: bytes, pae_hex: str) -> None:
    assert dsse.pae(ptype, body).hex() == pae_hex


def test_url_safe_base64_is_accepted() -> None:
    env = dsse.parse(b'{"payload": "-_-_Pj8=", "payloadType": "t", "signatures": [{"sig": "AA=="}]}')
    assert env.payload == bytes.fromhex("fbffbf3e3f")
