"""Secret literals are refused by value, not only by parameter name: at KFP compile time
(mlseal.components.compile), in sealed-stage params (mlseal.stage.Stage) and in
check_parameter; the error never repeats the value; digests, placeholders, paths and
credential-free URIs stay accepted."""

# (no `from __future__ import annotations`: KFP reads the pipeline functions' annotations)
import logging
import random
import string
from pathlib import Path
from typing import Any

import pytest

from mlseal.components import COMPONENTS
from mlseal.components.compile import compile_checked
from mlseal.errors import ConfigurationError
from mlseal.secrets.refs import (
    HIGH_ENTROPY_MIN_LENGTH,
    SecretLiteralError,
    check_parameter,
    secret_literal_kind,
)
from mlseal.stage import Stage
from tests.fixtures_pipeline import SealedEnv

SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# (innocent-looking parameter name, secret value, what the error must call it)
SECRET_VALUES = [
    ("database_url", "postgresql://mlseal:Sup3r-s3cret@db.internal:5432/mlseal", "URL with a password"),
    ("ledger", "postgres://u:pw@h/db?sslmode=require", "URL with a password"),
    ("conn", "postgresql://db.internal/mlseal?sslmode=require&password=Sup3r-s3cret", "connection string"),
    ("conn", "postgresql://db.internal/mlseal?sslpassword=Sup3r-s3cret", "connection string"),
    ("conn", "host=db.internal user=mlseal password=Sup3r-s3cret dbname=mlseal", "connection string"),
    ("conn", "host=db user=u sslpassword=k3y-pass", "connection string"),
    ("vault", "hvs.CAESIJ1kX2bY3cZ4dW5eV6fU7gT8hS9iR0jQxYz", "Vault token"),
    ("vault", "hvb.AAAAAQJ1kX2bY3cZ4dW5eV6fU7gT8hS9iR0jQxYz", "Vault token"),
    ("vault", "s.Q8zR3LmX7vT2pK9wN4bY6cH1", "Vault token"),
    ("auth", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "JSON Web Token"),
    ("cert", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB8d\n-----END EC PRIVATE KEY-----\n", "PEM private key"),
    ("cert", "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----", "PEM private key"),
    ("cert", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n-----END OPENSSH PRIVATE KEY-----", "PEM private key"),
    ("aws", "AKIAIOSFODNN7EXAMPLE", "AWS access key"),
    ("gh", "ghp_16C7e42F292c6912E7710c838347Ae178B4a9Zx", "GitHub token"),
    ("notify", "xoxb-1234567890-abcdefghijAB", "Slack token"),
    ("model_tag", "q8Zr3LmX7vT2pK9wN4bY6cH1", "high-entropy token"),
    ("aws_region_hint", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "high-entropy token"),
    ("extra", {"nested": ["ok", "postgresql://u:pw@h/db"]}, "URL with a password"),
    ("extra", ["x", {"hvs.CAESIJ1kX2bY3cZ4dW5eV6fU7gT8hS9": 1}], "Vault token"),
]

ACCEPTED_VALUES: list[Any] = [
    SHA,
    f"sha256:{SHA}",
    f"ghcr.io/acme/trainer@sha256:{SHA}",
    "123e4567-e89b-12d3-a456-426614174000",
    "{{$.inputs.parameters['db_password']}}",
    "{{$.pipeline_job_uuid}}",
    "postgresql://u:{{$.inputs.parameters['pw']}}@h/db",
    "host=db user=u password={{$.inputs.parameters['pw']}}",
    "/data/ImageNet2012/train/n01440764/ResNet50FinalModelWeightsV2.pt",
    "./models/ResNet50FinalModelWeightsV2/model.onnx",
    "s3://bucket/models/ResNet50FinalModelWeightsV2/model.onnx",
    "file:///data/raw.csv",
    "postgresql://mlseal@ledger:5432/mlseal?sslmode=verify-full",
    "postgresql://ledger.mlseal.svc/mlseal?sslrootcert=/etc/mlseal/ca.pem",
    "https://vault.example:8200/v1/secret/data/x",
    "http://host:8080/path@x",
    "mlseal/anonymize/hmac",
    "mlseal-data",
    "MyPipelineComponentName2024",
    "ResNet50FinalModelWeightsV2",
    "StandardScalerMinMaxNormalizer01",
    "ImageNet2012ValidationSetSubset",
    "Llama2Chat7bQuantizedQ4KM",
    "2026-01-01T00:00:00.000000Z",
    "gcr.io/myproject/trainer:v1.2.3",
    "the quick brown fox jumps over the lazy dog",
    "",
    60,
    0.01,
    True,
    None,
    {"lr": 0.1, "layers": [64, 32], "optimizer": "AdamW"},
]


@pytest.mark.parametrize(("name", "value", "kind"), SECRET_VALUES, ids=[f"{n}:{k}" for n, _, k in SECRET_VALUES])
def test_secret_value_under_innocent_name_is_refused(name: str, value: Any, kind: str) -> None:
    with pytest.raises(SecretLiteralError) as exc:
        check_parameter(name, value)
    msg = str(exc.value)
    assert msg.startswith(f"{name}: the value looks like"), msg
    assert kind in msg, msg
    assert isinstance(exc.value, ConfigurationError)
    # the error never repeats the value, nor its secret part
    for part in _secret_parts(value):
        assert part not in msg, (part, msg)


def _secret_parts(value: Any) -> list[str]:
    text = repr(value)
    parts = [text] if isinstance(value, str) else []
    for marker in ("Sup3r-s3cret", "pw@", "k3y-pass", "CAESIJ1kX2b", "Q8zR3LmX", "dozjgNryP4", "MHcCAQEE",
                   "AKIAIOSFODNN7", "16C7e42F", "abcdefghijAB", "q8Zr3LmX", "wJalrXUtnFEMI"):
        if marker in text:
            parts.append(marker)
    return parts


@pytest.mark.parametrize("value", ACCEPTED_VALUES, ids=[repr(v)[:40] for v in ACCEPTED_VALUES])
def test_digests_placeholders_paths_and_plain_uris_are_accepted(value: Any) -> None:
    assert secret_literal_kind(value) is None
    check_parameter("source", value)
    check_parameter("database_url", value)


def test_reference_parameters_still_accept_references() -> None:
    check_parameter("hmac_key_path", "mlseal/anonymize/hmac")
    check_parameter("data_key_name", "mlseal-data")
    check_parameter("db_password_ref", "mlseal/db/password")
    with pytest.raises(SecretLiteralError, match="db_password"):
        check_parameter("db_password", "hunter2")  # the name rule is unchanged


def test_high_entropy_threshold_catches_random_tokens() -> None:
    # documented in mlseal/secrets/refs.py: >= 96% of random 32-character base62 tokens
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    tokens = ["".join(rng.choice(alphabet) for _ in range(32)) for _ in range(500)]
    caught = sum(secret_literal_kind(t) is not None for t in tokens)
    assert caught >= 0.9 * len(tokens), caught
    # below the documented length nothing is judged by value
    assert secret_literal_kind("q8Zr3LmX7vT2pK9wN4b"[: HIGH_ENTROPY_MIN_LENGTH - 1]) is None
    # hex is a digest, never a token: a 64-hex value passes whatever its randomness
    assert secret_literal_kind("".join(rng.choice("0123456789abcdef") for _ in range(64))) is None


def test_compilation_refuses_secret_default_under_innocent_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kfp import dsl

    secret = "postgresql://mlseal:Sup3r-s3cret@db.internal:5432/mlseal"

    @dsl.pipeline(name="leaky-url")
    def leaky(source: str, database_url: str = secret) -> None:
        COMPONENTS["ingest"](source=source)

    caplog.set_level(logging.DEBUG)
    with pytest.raises(SecretLiteralError, match="database_url: the value looks like a URL with a password") as exc:
        compile_checked(leaky, tmp_path / "leaky.yaml")
    assert not (tmp_path / "leaky.yaml").exists()
    assert "Sup3r-s3cret" not in str(exc.value) and "Sup3r-s3cret" not in caplog.text

    # a constant argument of a sealed task is refused as the pipeline is defined, before any YAML
    with pytest.raises(SecretLiteralError, match="Vault token") as exc:

        @dsl.pipeline(name="token-in-task")
        def token(source: str) -> None:
            COMPONENTS["ingest"](source="hvs.CAESIJ1kX2bY3cZ4dW5eV6fU7gT8hS9iR0jQxYz")

    assert "CAESIJ1kX2b" not in str(exc.value)


def test_shipped_components_compile_without_false_positives() -> None:
    for name, component in COMPONENTS.items():
        assert compile_checked(component), name


def test_stage_refuses_secret_param_value_under_innocent_name(sealed_env: SealedEnv) -> None:
    with pytest.raises(SecretLiteralError, match="stage clean: param database_url: the value looks like") as exc:
        Stage("process", name="clean", sealing=sealed_env.sealing,
              params={"database_url": "postgresql://u:Sup3r-s3cret@h/db"})
    assert "Sup3r-s3cret" not in str(exc.value)
    with pytest.raises(SecretLiteralError, match="high-entropy token"):
        Stage("process", name="clean", sealing=sealed_env.sealing, params={"note": "q8Zr3LmX7vT2pK9wN4bY6cH1"})
    # ordinary params pass
    Stage("process", name="clean", sealing=sealed_env.sealing,
          params={"mode": "lower", "source": "s3://bucket/raw.csv", "digest": SHA, "epochs": 3})
