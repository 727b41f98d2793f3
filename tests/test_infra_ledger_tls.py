"""The ledger's server settings, for real: a throwaway PostgreSQL started with the
StatefulSet's arguments and the shipped pg_hba.conf, a certificate for the Service name
from a private CA, the key mounted the way Kubernetes mounts it (root-owned, group
postgres, 0440). Then the clients' settings: verify-full against the mounted CA works,
plain TCP, the system CA bundle and a wrong host name do not, and `mlseal ledger init`
runs with the init Job's exact arguments (only the port and CA path mapped to here).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.test_infra_manifests import LEDGER_CA, LEDGER_HOST, build, one

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
OVERLAY = "overlays/dev"
ADMIN_PASSWORD = "ledger-Admin-" + os.urandom(6).hex()


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        pytest.fail("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _certs(tmp: Path, dns_names: list[str]) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlseal-ledger-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tls = tmp / "tls"
    tls.mkdir()
    (tls / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    # as a Secret volume with defaultMode 0440 and fsGroup = postgres's group
    gid = pwd.getpwnam("postgres").pw_gid
    for f in ("tls.crt", "tls.key"):
        if os.geteuid() == 0:
            os.chown(tls / f, 0, gid)
        os.chmod(tls / f, 0o440)
    ca_file = tmp / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return tls / "tls.crt", tls / "tls.key", ca_file


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    # not under pytest's tmp (0700 to root): the postgres user must reach it
    tmp = Path(tempfile.mkdtemp(prefix="mlseal-ledger-tls-"))
    os.chmod(tmp, 0o755)
    try:
        yield from _serve(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _serve(tmp: Path) -> Iterator[dict[str, Any]]:
    bindir = _pg_bin()
    sts = one(OVERLAY, "StatefulSet", "mlseal-ledger")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    cert_spec = one(OVERLAY, "Certificate", "mlseal-ledger-tls")["spec"]
    crt, key, ca = _certs(tmp, cert_spec["dnsNames"])
    hba_cm = next(d for d in build(OVERLAY) if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
        "mlseal-ledger-hba"))
    hba = tmp / "pg_hba.conf"
    hba.write_text(hba_cm["data"]["pg_hba.conf"])
    data, run, logs = tmp / "data", tmp / "run", tmp / "logs"
    for d in (data, run, logs):
        d.mkdir()
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
    pwfile = tmp / "pw"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    os.chmod(pwfile, 0o644)
    r = _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                      "--auth=scram-sha-256"])
    pwfile.unlink()
    assert r.returncode == 0, r.stderr
    # the StatefulSet's settings, with the mounted paths mapped to this directory
    mapped = {"/etc/mlseal/ledger-tls/tls.crt": str(crt), "/etc/mlseal/ledger-tls/tls.key": str(key),
              "/etc/mlseal/ledger-hba/pg_hba.conf": str(hba)}
    args = []
    for a in c["args"]:
        name, _, value = a.partition("=")
        args.append(f"{name}={mapped.get(value, value)}" if value else a)
    port = _free_port()
    opts = " ".join([*args, "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
                     "-c", f"unix_socket_directories={run}"])
    r = _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(logs / "log"), "-w", "start"])
    log = (logs / "log").read_text() if (logs / "log").exists() else ""
    assert r.returncode == 0, r.stderr + log
    try:
        yield {"port": port, "ca": ca, "log": logs / "log",
               "db": next(e["value"] for e in c["env"] if e["name"] == "POSTGRES_DB")}
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])


def _conninfo(server: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"host": LEDGER_HOST, "hostaddr": "127.0.0.1", "port": server["port"], "dbname": "postgres",
            "user": "postgres", "password": ADMIN_PASSWORD, "connect_timeout": 5, **kw}


def test_verify_full_against_the_ledger_ca_connects(server: dict[str, Any]) -> None:
    with psycopg.connect(**_conninfo(server, sslmode="verify-full", sslrootcert=str(server["ca"]))) as c:
        row = c.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")


def test_plain_tcp_is_refused(server: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(**_conninfo(server, sslmode="disable"))


def test_the_system_ca_bundle_does_not_vouch_for_the_ledger(server: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(**_conninfo(server, sslmode="verify-full", sslrootcert="system"))


def test_a_name_outside_the_certificate_is_refused(server: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"does not match host name|server certificate"):
        psycopg.connect(**_conninfo(server, host="mlseal-ledger.other.svc", sslmode="verify-full",
                                    sslrootcert=str(server["ca"])))


def test_a_wrong_password_is_refused(server: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**_conninfo(server, password="not-it", sslmode="verify-full", sslrootcert=str(server["ca"])))


def test_init_job_arguments_work_against_the_tls_server(server: dict[str, Any]) -> None:
    with psycopg.connect(**_conninfo(server, sslmode="verify-full", sslrootcert=str(server["ca"])),
                         autocommit=True) as c:
        c.execute(f"CREATE DATABASE {server['db']}")
    job = one(OVERLAY, "Job", "mlseal-ledger-init")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args = list(c["args"])
    (i,) = [n for n, a in enumerate(args) if a.startswith("--ledger=")]
    url = urlsplit(args[i].removeprefix("--ledger="))
    assert url.hostname == LEDGER_HOST and f"sslrootcert={LEDGER_CA}" in url.query
    args[i] = "--ledger=" + urlunsplit(url._replace(netloc=f"{url.hostname}:{server['port']}",
                                                    query=url.query.replace(LEDGER_CA, str(server["ca"]))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
    env.update({"PGPASSWORD": ADMIN_PASSWORD, "PGHOSTADDR": "127.0.0.1",  # the Secret; DNS stand-in
                "PYTHONPATH": str(REPO)})
    for attempt in range(2):
        r = subprocess.run([sys.executable, "-m", "mlseal.cli", *args], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["created"] is (attempt == 0) and out["changed"] is (attempt == 0)
        assert ADMIN_PASSWORD not in r.stdout + r.stderr
    assert out["schema"] == "public"
    with psycopg.connect(**_conninfo(server, dbname=server["db"], sslmode="verify-full",
                                     sslrootcert=str(server["ca"]))) as conn:
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'mlseal_ledger_%'")}
    assert roles == {"mlseal_ledger_writer", "mlseal_ledger_reader", "mlseal_ledger_witness"}
    assert ADMIN_PASSWORD not in server["log"].read_text()
    assert yaml.safe_dump(job).count(ADMIN_PASSWORD) == 0
