"""No secret value reaches a log line, an exception text, a traceback or a repr.

One scenario drives every code path the suite exercises — dev store, Vault token /
AppRole / Kubernetes login, KV reads, Transit signing, data keys and envelopes, and each
fault (down, sealed, 403, expired token, renewal refused, missing version, wrong key
type, malformed response, TLS failure) — while capturing logs from *every* logger at
DEBUG (hvac, urllib3 included). Then it scans all captured text for every secret value
used: tokens, AppRole secret ids, service-account JWTs, KV values, data-key bytes (raw,
base64, hex) and dev private keys.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlseal.errors import Error
from mlseal.secrets import envelope, open_secret_source
from mlseal.secrets._dev import DevSecretSource
from mlseal.secrets._vault import VaultSecretSource
from mlseal.secrets._vault_config import VaultConfig
from mlseal.secrets.check import run_checks
from tests.fixtures_vault import ALL_SECRET_VALUES, VaultHarness, random_value
from tests.vault_server import FakeVault


class Collector:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.values: set[str] = set()

    def secret(self, value: str | bytes) -> None:
        if isinstance(value, bytes):
            self.values.update({base64.b64encode(value).decode(), value.hex()})
            self.values.add(repr(value)[2:-1])  # as it would print inside a bytes repr
        else:
            self.values.add(value)

    def see(self, *objs: Any) -> None:
        for o in objs:
            self.texts += [repr(o), str(o)]

    def fail(self, fn: Callable[[], object], expected: type[BaseException] = Error) -> BaseException:
        with pytest.raises(expected) as info:
            fn()
        exc = info.value
        self.texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        return exc


def test_no_secret_value_leaks_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: mlseal, hvac, urllib3
    c = Collector()

    # dev store
    dev = open_secret_source(dev_dir=tmp_path / "dev", env={})
    assert isinstance(dev, DevSecretSource)
    dev_value = random_value("dev")
    c.secret(dev_value)
    dev.put("app/cred", {"password": dev_value})
    c.see(dev, dev.read("app/cred"), dev.read("app/cred").data, dev.ensure_key("hmac"))
    c.secret(dev.ensure_key("hmac").data["key"].reveal())
    signer = dev.transit_signer()
    c.secret(signer.private_pem().decode().split("-----")[2].strip().splitlines()[0])
    c.see(signer)
    dk = dev.data_key()
    c.secret(dk.plaintext.reveal())
    c.see(dk, dk.plaintext)
    c.secret((tmp_path / "dev" / "transit" / "mlseal-data.kek").read_bytes())
    c.fail(lambda: dev.read("app/cred", version=9))
    c.see(run_checks(dev))

    with FakeVault() as fake, FakeVault(tls=True, workdir=tmp_path / "tls") as tls:
        h = VaultHarness(fake.addr, fake.root_token, fake=fake)
        h.install_policies()
        h.transit_key("mlseal-signing")
        h.transit_key("mlseal-data", "aes256-gcm96")
        kv_value = random_value("kv")
        h.put("mlseal/db", {"password": kv_value})
        token, _ = h.create_token(["mlseal-pipeline"], ttl="90s")
        env = h.env(VAULT_TOKEN=token)

        def src(e: dict[str, str], **kw: Any) -> VaultSecretSource:
            cfg = VaultConfig.from_env(e)
            cfg = VaultConfig(**{**cfg.__dict__, "attempts": 2})
            return VaultSecretSource(cfg, clock=fake.clock, sleep=lambda s: None, **kw)

        s = src(env)
        kv = s.read("mlseal/db")
        c.see(s, s.session, s.config, s.config.auth, s.session.token_state, kv, kv.data, kv.ref())
        vsigner = s.transit_signer()
        c.see(vsigner, vsigner.sign(b"x"))
        vdk = s.data_key()
        c.secret(vdk.plaintext.reveal())
        c.see(vdk, envelope.read_header(envelope.encrypt(b"rows", vdk, b"a"))[0])
        c.see(run_checks(s, paths=["mlseal/db"]))

        # AppRole and Kubernetes credentials
        ar_env = h.approle("mlseal-pipeline", ["mlseal-pipeline"])
        c.see(src(ar_env).read("mlseal/db"), VaultConfig.from_env(ar_env))
        h.admin.sys.enable_auth_method(method_type="kubernetes", path="kubernetes")
        h.admin.auth.kubernetes.create_role(name="r", bound_service_account_names=["sa"],
                                            bound_service_account_namespaces=["ns"], policies=["mlseal-pipeline"])
        jwt = fake.k8s_jwt("sa", "ns")
        c.secret(jwt)
        (tmp_path / "jwt").write_text(jwt)
        k8s_env = h.env(MLSEAL_VAULT_K8S_ROLE="r", MLSEAL_VAULT_K8S_JWT=str(tmp_path / "jwt"))
        c.see(src(k8s_env).read("mlseal/db"))
        (tmp_path / "jwt").write_text(fake.k8s_jwt("other", "ns"))
        c.fail(lambda: src(k8s_env).read("mlseal/db"))

        # faults
        bad_secret_env = {**ar_env, "VAULT_SECRET_ID": random_value("sid")}
        c.secret(bad_secret_env["VAULT_SECRET_ID"])
        c.fail(lambda: src(bad_secret_env).read("mlseal/db"))
        c.fail(lambda: s.read("mlseal/db", version=5))
        c.fail(lambda: s.transit_signer("mlseal-data"))
        c.fail(lambda: src(h.token_env(["mlseal-webhook"])).read("mlseal/db"))
        fake.inject("secret/data/mlseal/db", raw=b'{"data": {"data": "' + kv_value.encode() + b'"}}')
        c.fail(lambda: s.read("mlseal/db"))
        fake.inject("secret/data/mlseal/db", status=500, times=5, errors=[f"echo {token}"])  # hostile server
        c.fail(lambda: s.read("mlseal/db"))
        fake.seal()
        c.fail(lambda: s.read("mlseal/db"))
        c.see(run_checks(s))
        fake.unseal()
        fake.refuse_renewal = True
        fake.advance(70)
        s.read("mlseal/db")
        fake.advance(30)
        c.fail(lambda: s.read("mlseal/db"))
        expired = src(env)
        c.fail(lambda: expired.read("mlseal/db"))
        tls_env = {"VAULT_ADDR": tls.addr, "VAULT_TOKEN": tls.root_token}
        c.secret(tls.root_token)
        c.fail(lambda: src(tls_env).read("mlseal/db"))
        fake.stop()
        c.fail(lambda: src(env).read("mlseal/db"))

        c.values |= h.secret_values | {kv_value}

    c.values |= {v for v in ALL_SECRET_VALUES if len(v) >= 8}
    haystack = "\n".join(c.texts) + "\n" + caplog.text
    assert len(caplog.records) > 20  # the scan looked at real log output
    leaked = sorted(v for v in c.values if v and v in haystack)
    assert not leaked, f"{len(leaked)} secret value(s) leaked, e.g. one starting {leaked[0][:4]}…"
    # the scanned text is where a leak would show: it names paths, keys and accessors
    for expected in ("secret/mlseal/db", "transit/keys/mlseal-signing", "accessor", "sealed", "Vault answered 500"):
        assert expected in haystack
