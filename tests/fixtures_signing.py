"""Pytest fixtures for the signing area (loaded by conftest.py): keys, small models, and a
private Sigstore instance (`sigstore_instance`)."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlseal.signing.keys import LocalKeySigner


@dataclass(frozen=True)
class KeyFiles:
    signer: LocalKeySigner
    private: Path
    public: Path


def make_key(directory: Path, name: str = "signer") -> KeyFiles:
    signer = LocalKeySigner.generate()
    priv, pub = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    signer.save(priv, pub)
    return KeyFiles(signer, priv, pub)


@pytest.fixture
def signing_key(tmp_path: Path) -> KeyFiles:
    """A fresh EC P-256 key pair written to tmp_path (private 0600, public PEM)."""
    return make_key(tmp_path / "keys")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model directory: nested files, a name that sorts differently by path
    component than by string (a/z vs a.txt), and a .git directory that is ignored."""
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "a").mkdir()
    (d / "config.json").write_text('{"layers": 2}')
    (d / "a.txt").write_text("hello")
    (d / "a" / "z").write_text("z")
    (d / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 300)
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return d


# -- a private Sigstore instance, in-process ------------------------------------------------
#
# Keyless signing needs Fulcio (certificates for OIDC identities) and Rekor (a transparency
# log). These machines reach no Sigstore instance, so the tests run one: a CA, a CT log key
# for the embedded SCT (RFC 6962 precertificate entry), and a one-entry-per-tree Rekor v1
# log (SET over the RFC 8785 entry, signed checkpoint, RFC 9162 leaf hash), behind the
# same HTTP endpoints sigstore-python calls. Its trusted_root.json / ClientTrustConfig is
# exactly what an operator of a private instance hands out.

_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _ecdsa(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _ts(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_identity_token(issuer: str, subject: str, *, audience: str = "sigstore", ttl: int = 600) -> str:
    """An OIDC ID token as an identity provider would issue it (HS256; Fulcio here trusts it)."""
    import jwt

    now = int(_dt.datetime.now(_dt.UTC).timestamp())
    claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl}
    return jwt.encode(claims, "test-idp-key-not-a-secret-of-mlseal", algorithm="HS256")


class SigstoreInstance:
    """Fulcio + CT log + Rekor v1 for tests, at ``url``; ``trust_config_json()`` describes it."""

    def __init__(self, issuer: str = "https://oidc.mlseal.test") -> None:
        self.issuer = issuer
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.start = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlseal-test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "mlseal-test-fulcio")])
        ca_pub = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start).not_valid_after(self.start + _dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_pub), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.entries: list[bytes] = []
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SigstoreInstance:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what an operator publishes ------------------------------------------------------

    def _key_entry(self, key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
        der = _spki(key.public_key())
        return {
            "baseUrl": url, "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": base64.b64encode(der).decode(), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": _ts(self.start)}},
            "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
        }

    def trusted_root(self) -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._key_entry(self.rekor_key, self.url)],
            "certificateAuthorities": [{
                "subject": {"organization": "mlseal-test", "commonName": "mlseal-test-fulcio"},
                "uri": self.url,
                "certChain": {"certificates": [
                    {"rawBytes": base64.b64encode(self.ca_cert.public_bytes(serialization.Encoding.DER)).decode()}
                ]},
                "validFor": {"start": _ts(self.start)},
            }],
            "ctlogs": [self._key_entry(self.ct_key, self.url + "/ct")],
            "timestampAuthorities": [],
        }

    def trust_config(self) -> dict[str, Any]:
        svc = {"url": self.url, "majorApiVersion": 1, "validFor": {"start": _ts(self.start)}, "operator": "mlseal-test"}
        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": self.trusted_root(),
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [svc], "oidcUrls": [{**svc, "url": self.url + "/oidc"}], "rekorTlogUrls": [svc],
                "rekorTlogConfig": {"selector": "ANY"}, "tsaUrls": [], "tsaConfig": {"selector": "ANY"},
            },
        }

    # -- Fulcio ---------------------------------------------------------------------------

    def issue(self, csr_pem: bytes, token: str) -> list[str]:
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False, "verify_aud": False})
        if claims.get("iss") != self.issuer:
            raise PermissionError(f"untrusted issuer {claims.get('iss')}")
        csr = x509.load_pem_x509_csr(csr_pem)
        pub = csr.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        subject = str(claims["sub"])
        san: x509.GeneralName = (
            x509.RFC822Name(subject) if "@" in subject else x509.UniformResourceIdentifier(subject)
        )
        now = _dt.datetime.now(_dt.UTC)

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                .public_key(pub).serial_number(serial)
                .not_valid_before(now - _dt.timedelta(seconds=30)).not_valid_after(now + _dt.timedelta(minutes=10))
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(x509.UnrecognizedExtension(_OIDC_ISSUER_V1, self.issuer.encode()), critical=False)
            )

        serial = x509.random_serial_number()
        # RFC 6962 §3.2: the SCT signs the precertificate's TBS (the final TBS minus the SCT list)
        tbs = builder().sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        millis = int(now.timestamp() * 1000)
        signed = struct.pack("!BBQH", 0, 0, millis, 1) + issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        signed += struct.pack("!H", 0)  # no extensions
        sig = _ecdsa(self.ct_key, signed)
        log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        sct = (struct.pack("!B", 0) + log_id + struct.pack("!Q", millis) + struct.pack("!H", 0)
               + struct.pack("!BB", 4, 3) + struct.pack("!H", len(sig)) + sig)
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        octet = b"\x04" + _der_len(len(sct_list)) + sct_list
        cert = builder().add_extension(x509.UnrecognizedExtension(_SCT_LIST, octet), critical=False).sign(
            self.ca_key, hashes.SHA256()
        )
        assert cert.tbs_precertificate_bytes == tbs
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, self.ca_cert)]

    # -- Rekor v1 -------------------------------------------------------------------------

    def log(self, proposed: dict[str, Any]) -> dict[str, Any]:
        if proposed.get("kind") != "dsse":
            raise ValueError(f"this test log takes dsse entries, got {proposed.get('kind')}")
        content = proposed["spec"]["proposedContent"]
        env = json.loads(content["envelope"])
        body = {
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256",
                                 "value": hashlib.sha256(content["envelope"].encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256",
                                "value": hashlib.sha256(base64.b64decode(env["payload"])).hexdigest()},
                "signatures": [{"signature": s["sig"], "verifier": content["verifiers"][0]} for s in env["signatures"]],
            },
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        self.entries.append(raw)
        index = len(self.entries) - 1
        log_id = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()
        integrated = int(_dt.datetime.now(_dt.UTC).timestamp())
        # each entry is proven in the one-leaf tree over itself (RFC 9162 leaf hash)
        root = hashlib.sha256(b"\x00" + raw).digest()
        origin = "mlseal-test-rekor"
        note = f"{origin}\n1\n{base64.b64encode(root).decode()}\n"
        note_sig = base64.b64encode(log_id[:4] + _ecdsa(self.rekor_key, note.encode())).decode()
        checkpoint = f"{note}\n\u2014 {origin} {note_sig}\n"
        set_payload = rfc8785.dumps({"body": base64.b64encode(raw).decode(), "integratedTime": integrated,
                                     "logID": log_id.hex(), "logIndex": index})
        return {hashlib.sha256(raw).hexdigest(): {
            "body": base64.b64encode(raw).decode(), "integratedTime": integrated, "logID": log_id.hex(),
            "logIndex": index,
            "verification": {
                "inclusionProof": {"checkpoint": checkpoint, "hashes": [], "logIndex": 0,
                                   "rootHash": root.hex(), "treeSize": 1},
                "signedEntryTimestamp": base64.b64encode(_ecdsa(self.rekor_key, set_payload)).decode(),
            },
        }}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        instance = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                # OIDC discovery (model-signing's keyless signer looks it up even with a token)
                instance.requests.append(self.path)
                if self.path == "/oidc/.well-known/openid-configuration":
                    self._reply(200, {"issuer": instance.issuer, "authorization_endpoint": instance.url + "/oidc/auth",
                                      "token_endpoint": instance.url + "/oidc/token"})
                else:
                    self._reply(404, {"message": f"no route {self.path}"})

            def do_POST(self) -> None:
                instance.requests.append(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                try:
                    if self.path == "/api/v2/signingCert":
                        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                        csr = base64.b64decode(body["certificateSigningRequest"])
                        chain = instance.issue(csr, token)
                        self._reply(201, {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}})
                    elif self.path == "/api/v1/log/entries":
                        self._reply(201, instance.log(body))
                    else:
                        self._reply(404, {"message": f"no route {self.path}"})
                except PermissionError as exc:
                    self._reply(401, {"message": str(exc)})

        return Handler


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


@pytest.fixture
def sigstore_instance() -> Iterator[SigstoreInstance]:
    """A private Sigstore instance (Fulcio, CT log, Rekor v1) on 127.0.0.1."""
    with SigstoreInstance() as inst:
        yield inst
