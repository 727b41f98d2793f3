"""Every fault in issue 3's list gives a typed error naming what failed, never a value.

Vault down, sealed, 403 on a path, expired token, renewal refused, missing KV version,
wrong key type, malformed response, TLS failure — plus the retry rules (5xx and 429
retried with bounded backoff, 4xx never), token renewal at 2/3 of the TTL, re-login,
namespaces and Kubernetes auth. These need the fake's controls, so they run on the fake.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, InfrastructureError, VaultError
from mlseal.secrets import (
    KeyTypeError,
    SecretNotFound,
    VaultAuthError,
    VaultPermissionDenied,
    VaultRequestRefused,
    VaultResponseError,
    VaultSealed,
    VaultTLSError,
    VaultUnavailable,
    open_secret_source,
)
from mlseal.secrets._vault import VaultSecretSource
from mlseal.secrets._vault_config import VaultConfig
from tests.fixtures_vault import VaultHarness, random_value
from tests.vault_server import FakeVault

pytestmark = pytest.mark.usefixtures("vault_leak_guard")


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def source(env: dict[str, str], *, fake: FakeVault | None = None, sleep: Callable[[float], None] | None = None,
           attempts: int = 4) -> VaultSecretSource:
    cfg = VaultConfig.from_env(env)
    cfg = VaultConfig(**{**cfg.__dict__, "attempts": attempts, "timeout": 2.0})
    kwargs: dict[str, object] = {"sleep": sleep or Sleeps()}
    if fake is not None:
        kwargs["clock"] = fake.clock
    return VaultSecretSource(cfg, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def seeded(vault_fake: VaultHarness) -> VaultHarness:
    vault_fake.transit_key("mlseal-signing", "ecdsa-p256")
    vault_fake.transit_key("mlseal-data", "aes256-gcm96")
    vault_fake.put("mlseal/db", {"password": random_value("pw")})
    return vault_fake


@pytest.fixture
def fake(seeded: VaultHarness) -> FakeVault:
    """The fake server behind `seeded`, for the tests that drive its fault controls."""
    assert seeded.fake is not None
    return seeded.fake


def check_clean(h: VaultHarness, exc: BaseException) -> None:
    h.assert_clean(str(exc), repr(exc), str(exc.__cause__ or ""), str(exc.__context__ or ""))


# -- unreachable, sealed, TLS --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vault_down_is_unavailable_after_bounded_retries() -> None:
    sleeps = Sleeps()
    addr = f"http://127.0.0.1:{_free_port()}"
    src = source({"VAULT_ADDR": addr, "VAULT_TOKEN": random_value("hvs")}, sleep=sleeps, attempts=3)
    with pytest.raises(VaultUnavailable, match=f"cannot reach Vault at {addr}.*3 attempts") as exc:
        src.read("mlseal/db")
    assert isinstance(exc.value, InfrastructureError)
    assert len(sleeps.calls) == 2  # bounded: attempts - 1 pauses
    assert sleeps.calls[1] > sleeps.calls[0] * 0.9  # backing off, not hammering
    assert all(s <= 2.0 for s in sleeps.calls)


def test_sealed_vault(seeded: VaultHarness, fake: FakeVault) -> None:
    sleeps = Sleeps()
    src = source(seeded.token_env(["mlseal-pipeline"]), sleep=sleeps)
    fake.seal()
    with pytest.raises(VaultSealed, match=f"Vault at {fake.addr} is sealed") as exc:
        src.read("mlseal/db")
    check_clean(seeded, exc.value)
    assert sleeps.calls == []  # sealed needs an operator: no retry loop
    fake.unseal()
    assert src.read("mlseal/db").version == 1


def test_tls_failure_without_the_ca(vault_tls_server: FakeVault) -> None:
    h = VaultHarness(vault_tls_server.addr, vault_tls_server.root_token,
                     ca_cert_path=vault_tls_server.ca_cert_path, fake=vault_tls_server)
    h.install_policies()
    h.put("mlseal/db", {"password": random_value()})
    env = h.token_env(["mlseal-pipeline"])
    # with the CA: works over real TLS
    assert source(env).read("mlseal/db").version == 1
    # without it: a TLS error naming the address and the fix, and no retries
    env.pop("VAULT_CACERT")
    sleeps = Sleeps()
    with pytest.raises(VaultTLSError, match=r"certificate verify failed.*VAULT_CACERT") as exc:
        source(env, sleep=sleeps).read("mlseal/db")
    assert sleeps.calls == []
    check_clean(h, exc.value)


def test_tls_client_against_plain_http(vault_server: FakeVault) -> None:
    env = {"VAULT_ADDR": vault_server.addr.replace("http://", "https://"), "VAULT_TOKEN": vault_server.root_token}
    with pytest.raises(VaultTLSError, match="TLS"):
        source(env).read("mlseal/db")


def test_missing_cacert_file_is_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="VAULT_CACERT"):
        open_secret_source(env={"VAULT_ADDR": "https://v:8200", "VAULT_TOKEN": "t",
                                "VAULT_CACERT": str(tmp_path / "nope.pem")})


# -- retry policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_errors_are_retried(seeded: VaultHarness, fake: FakeVault, status: int) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"]))
    src.session.login()
    fake.inject("secret/data/mlseal/db", status=status, times=2, errors=["temporarily unavailable"])
    before = fake.count("secret/data/mlseal/db")
    assert src.read("mlseal/db").version == 1
    assert fake.count("secret/data/mlseal/db") - before == 3


def test_retries_are_bounded(seeded: VaultHarness, fake: FakeVault) -> None:
    sleeps = Sleeps()
    src = source(seeded.token_env(["mlseal-pipeline"]), sleep=sleeps, attempts=3)
    src.session.login()
    fake.inject("secret/data/mlseal/db", status=500, times=10)
    with pytest.raises(VaultUnavailable, match=r"read secret/mlseal/db: Vault answered 500 after 3 attempts"):
        src.read("mlseal/db")
    assert fake.count("secret/data/mlseal/db", "GET") == 3
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize("status,error", [(400, VaultRequestRefused), (403, VaultPermissionDenied),
                                          (404, SecretNotFound)])
def test_client_errors_are_not_retried(seeded: VaultHarness, fake: FakeVault, status: int,
                                       error: type[Exception]) -> None:
    sleeps = Sleeps()
    src = source(seeded.token_env(["mlseal-pipeline"]), sleep=sleeps)
    src.session.login()
    fake.inject("secret/data/mlseal/db", status=status, times=1, errors=["nope"])
    with pytest.raises(error, match="mlseal/db"):
        src.read("mlseal/db")
    assert fake.count("secret/data/mlseal/db", "GET") == 1
    assert sleeps.calls == []


def test_dropped_connection_is_retried(seeded: VaultHarness, fake: FakeVault) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"]))
    src.session.login()
    fake.inject("secret/data/mlseal/db", drop=True, times=1)
    assert src.read("mlseal/db").version == 1


# -- auth, tokens, renewal ----------------------------------------------------------------------


def test_forbidden_path_names_path_and_accessor(seeded: VaultHarness) -> None:
    token, accessor = seeded.create_token(["mlseal-webhook"])
    src = source(seeded.env(VAULT_TOKEN=token))
    with pytest.raises(VaultPermissionDenied) as exc:
        src.read("mlseal/db")
    assert "secret/mlseal/db" in str(exc.value) and accessor in str(exc.value)
    assert token not in str(exc.value)
    check_clean(seeded, exc.value)


def test_expired_token_at_login(seeded: VaultHarness, fake: FakeVault) -> None:
    env = seeded.token_env(["mlseal-pipeline"], ttl="60s")
    fake.advance(61)
    with pytest.raises(VaultAuthError, match=r"VAULT_TOKEN was rejected.*expired, revoked or wrong") as exc:
        source(env, fake=fake).read("mlseal/db")
    check_clean(seeded, exc.value)


def test_token_renewed_after_two_thirds_of_ttl(seeded: VaultHarness, fake: FakeVault) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"], ttl="90s"), fake=fake)
    src.read("mlseal/db")
    fake.advance(50)  # < 2/3 of 90
    src.read("mlseal/db")
    assert fake.count("auth/token/renew-self") == 0
    fake.advance(15)  # 65 s > 60 s
    src.read("mlseal/db")
    assert fake.count("auth/token/renew-self") == 1
    fake.advance(80)  # past the original expiry: only alive because it was renewed
    assert src.read("mlseal/db").version == 1


def test_renewal_refused_static_token_fails_once_expired(seeded: VaultHarness, fake: FakeVault) -> None:
    token, accessor = seeded.create_token(["mlseal-pipeline"], ttl="90s")
    src = source(seeded.env(VAULT_TOKEN=token), fake=fake)
    src.read("mlseal/db")
    fake.refuse_renewal = True
    fake.advance(70)
    assert src.read("mlseal/db").version == 1  # refused, but the token is still valid
    assert fake.count("auth/token/renew-self") == 1
    fake.advance(30)
    with pytest.raises(VaultAuthError, match=f"accessor {accessor}.*expired.*new VAULT_TOKEN") as exc:
        src.read("mlseal/db")
    check_clean(seeded, exc.value)


def test_renewal_refused_approle_logs_in_again(seeded: VaultHarness, fake: FakeVault) -> None:
    env = seeded.approle("mlseal-pipeline", ["mlseal-pipeline"], ttl="90s")
    src = source(env, fake=fake)
    src.read("mlseal/db")
    assert fake.logins["auth/approle/"] == 1
    fake.refuse_renewal = True
    fake.advance(70)
    assert src.read("mlseal/db").version == 1
    assert fake.count("auth/token/renew-self") == 1
    assert fake.logins["auth/approle/"] == 2
    fake.advance(200)  # the first token is long dead; the new one was renewed or re-logged
    assert src.read("mlseal/db").version == 1


def test_revoked_token_under_approle_relogs_on_403(seeded: VaultHarness, fake: FakeVault) -> None:
    env = seeded.approle("mlseal-pipeline", ["mlseal-pipeline"])
    src = source(env, fake=fake)
    src.read("mlseal/db")
    with fake.lock:
        fake.tokens.pop(src.session._token)  # revoked behind our back
    assert src.read("mlseal/db").version == 1
    assert fake.logins["auth/approle/"] == 2


def test_bad_approle_secret_id(seeded: VaultHarness) -> None:
    env = seeded.approle("mlseal-pipeline", ["mlseal-pipeline"])
    env["VAULT_SECRET_ID"] = random_value("wrong")
    with pytest.raises(VaultAuthError, match=r"AppRole login at auth/approle failed:.*invalid role or secret ID") as e:
        source(env).read("mlseal/db")
    check_clean(seeded, e.value)
    assert env["VAULT_SECRET_ID"] not in str(e.value)


def test_kubernetes_auth(seeded: VaultHarness, fake: FakeVault, tmp_path: Path) -> None:
    seeded.admin.sys.enable_auth_method(method_type="kubernetes", path="kubernetes")
    seeded.admin.auth.kubernetes.create_role(
        name="mlseal-pipeline", bound_service_account_names=["mlseal-pipeline"],
        bound_service_account_namespaces=["kubeflow"], policies=["mlseal-pipeline"], ttl="20m")
    jwt_file = tmp_path / "token"
    jwt = fake.k8s_jwt("mlseal-pipeline", "kubeflow")
    seeded.secret_values.add(jwt)
    jwt_file.write_text(jwt)
    env = seeded.env(MLSEAL_VAULT_K8S_ROLE="mlseal-pipeline", MLSEAL_VAULT_K8S_JWT=str(jwt_file))
    src = source(env)
    assert src.read("mlseal/db").version == 1
    assert fake.logins["auth/kubernetes/"] == 1
    # a service account the role is not bound to is refused, naming the role
    jwt_file.write_text(fake.k8s_jwt("default", "kubeflow"))
    with pytest.raises(VaultAuthError, match="Kubernetes login as role mlseal-pipeline"):
        source(env).read("mlseal/db")
    jwt_file.unlink()
    with pytest.raises(ConfigurationError, match="service-account token"):
        source(env).read("mlseal/db")


def test_namespace_header_is_sent_and_scopes_data(vault_server: FakeVault) -> None:
    root = VaultHarness(vault_server.addr, vault_server.root_token, fake=vault_server)
    root.admin.adapter.post("/v1/sys/namespaces/team-a")
    ns = VaultHarness(vault_server.addr, vault_server.root_token, fake=vault_server, namespace="team-a")
    ns.install_policies()
    ns.put("mlseal/db", {"password": random_value()})
    env = ns.token_env(["mlseal-pipeline"])
    assert env["VAULT_NAMESPACE"] == "team-a"
    assert source(env).read("mlseal/db").version == 1
    assert vault_server.requests[-1].namespace == "team-a"
    env.pop("VAULT_NAMESPACE")  # the same token outside its namespace is refused
    with pytest.raises(VaultAuthError):
        source(env).read("mlseal/db")


# -- malformed responses, keys ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"data": null}', b'{"data": {"data": {}, "metadata": {}}}',
                                 b'{"data": {"data": "x", "metadata": {"version": 1}}}'])
def test_malformed_kv_response(seeded: VaultHarness, fake: FakeVault, raw: bytes) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"]))
    src.session.login()
    fake.inject("secret/data/mlseal/db", raw=raw)
    with pytest.raises(VaultResponseError, match="read secret/mlseal/db: malformed"):
        src.read("mlseal/db")


@pytest.mark.parametrize("raw", [b"garbage", b'{"data": {"signature": "nope"}}',
                                 b'{"data": {"signature": "vault:v1:AAAA"}}',
                                 b'{"data": {"signature": "vault:v9:MEUCIQ=="}}'])
def test_malformed_or_bogus_signature(seeded: VaultHarness, fake: FakeVault, raw: bytes) -> None:
    signer = source(seeded.token_env(["mlseal-pipeline"])).transit_signer()
    fake.inject("transit/sign/mlseal-signing", raw=raw)
    with pytest.raises(VaultResponseError, match="Transit sign with transit/keys/mlseal-signing"):
        signer.sign(b"data")


def test_malformed_login_and_datakey_responses(seeded: VaultHarness, fake: FakeVault) -> None:
    env = seeded.approle("mlseal-pipeline", ["mlseal-pipeline"])
    fake.inject("auth/approle/login", raw=b'{"auth": {"accessor": "x"}}')
    with pytest.raises(VaultResponseError, match="no client_token"):
        source(env).read("mlseal/db")
    src = source(env)
    src.data_key()
    fake.inject("transit/datakey/plaintext/mlseal-data", raw=b'{"data": {"plaintext": "AAAA", "ciphertext": "x"}}')
    with pytest.raises(VaultResponseError, match="datakey"):
        src.data_key()


def test_wrong_key_type_and_missing_key(seeded: VaultHarness) -> None:
    src = source(seeded.env(VAULT_TOKEN=seeded.root_token))
    seeded.transit_key("rsa-like-aes", "aes256-gcm96")
    with pytest.raises(KeyTypeError, match="rsa-like-aes has type 'aes256-gcm96'") as exc:
        src.transit_signer("rsa-like-aes")
    assert isinstance(exc.value, VaultError) and isinstance(exc.value, ConfigurationError)
    with pytest.raises(KeyTypeError, match="data keys need"):
        src.data_key("mlseal-signing")
    with pytest.raises(SecretNotFound, match="transit/keys/nope: Transit key not found"):
        src.transit_signer("nope")


def test_unwrap_with_wrong_key_or_tampered_ciphertext(seeded: VaultHarness) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"]))
    dk = src.data_key()
    tampered = dk.wrapped[:-6] + ("A" if dk.wrapped[-6] != "A" else "B") + dk.wrapped[-5:]
    with pytest.raises(VaultRequestRefused, match="Transit decrypt with transit/keys/mlseal-data"):
        src.unwrap_data_key(tampered)
    with pytest.raises(ConfigurationError, match="not by Vault Transit"):
        src.unwrap_data_key("dev:v1:AAAA")


def test_ensure_key_never_creates_in_vault(seeded: VaultHarness) -> None:
    src = source(seeded.token_env(["mlseal-pipeline"]))
    with pytest.raises(SecretNotFound, match="never creates Vault secrets"):
        src.ensure_key("mlseal/hmac")
    seeded.put("mlseal/hmac", {"key": random_value()})
    assert src.ensure_key("hmac").version == 1
