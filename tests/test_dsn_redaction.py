"""Ledger DSN passwords never reach a message, a log line or an exception.

Every libpq form (URI userinfo, percent-encoded userinfo, ``password=``/``sslpassword=``
in the URI query, keyword/value strings with quoted values, malformed input) is made
unreachable or unparseable, then driven through the three places a user or a log sees
ledger errors: ``mlseal ledger verify|init`` (stderr and ``--json``), ``mlseal admit``
with a policy naming that ledger, and a real AdmissionReview over TLS to the webhook
(denial message, audit line, every log record at DEBUG including psycopg's own). Each
password holds a distinctive marker that must appear nowhere, while the host and
database stay named so that an operator can act.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlseal.admission import load_policy
from mlseal.errors import ConfigurationError, Error, InfrastructureError
from mlseal.ledger import open_ledger, redact_url
from mlseal.ledger.dsn import redact_dsn, redact_text, scrub
from tests.fixtures_admission import AdmissionWorld, RunningWebhook, isvc, review, write_policy


@dataclass(frozen=True)
class Form:
    id: str
    dsn: str
    #: fragments of the credentials: none may appear anywhere (checked case-insensitively)
    secrets: tuple[str, ...]
    #: what the message must still name
    shown: tuple[str, ...] = ("127.0.0.1", "ledgerdb")


FORMS = [
    Form("keyword", "host=127.0.0.1 port=1 user=ledger_ro password=HunterKw1 dbname=ledgerdb", ("HunterKw1",)),
    Form("keyword-quoted", r"host=127.0.0.1 port=1 user=ledger_ro password='Hunter Kw2 \' q' dbname=ledgerdb",
         ("Hunter", "Kw2")),
    Form("keyword-sslpassword", "host=127.0.0.1 port=1 sslpassword=HunterKw3 sslmode=disable dbname=ledgerdb",
         ("HunterKw3",)),
    Form("keyword-oauth-secret", "host=127.0.0.1 port=1 oauth_client_secret=HunterKw4 dbname=ledgerdb",
         ("HunterKw4",)),
    # parameters written with another separator (ADO.NET/JDBC habits): libpq reads
    # "127.0.0.1;password=…" as the host, and the message would show it
    Form("keyword-semicolons", "host=127.0.0.1;password=HunterSep1;dbname=ledgerdb port=1", ("HunterSep1",),
         ("127.0.0.1",)),
    Form("keyword-commas", "host=127.0.0.1,password=HunterSep2 port=1 dbname=ledgerdb", ("HunterSep2",)),
    Form("keyword-in-user", "host=127.0.0.1 port=1 user=ledger_ro;Password=HunterSep3 dbname=ledgerdb",
         ("HunterSep3",)),
    Form("keyword-in-options", "host=127.0.0.1 port=1 options='-c password=HunterSep4' dbname=ledgerdb",
         ("HunterSep4",)),
    Form("uri-userinfo", "postgresql://ledger_ro:HunterUri1@127.0.0.1:1/ledgerdb", ("HunterUri1",)),
    Form("uri-percent-encoded", "postgresql://ledger_ro:Hunter%40Uri%2F2%20x@127.0.0.1:1/ledgerdb",
         ("Hunter", "Uri%2F2", "Uri/2")),
    Form("uri-query-password", "postgres://ledger_ro@127.0.0.1:1/ledgerdb?password=HunterQry1", ("HunterQry1",)),
    Form("uri-query-sslpassword", "postgresql://ledger_ro@127.0.0.1:1/ledgerdb?sslmode=disable&sslpassword=HunterQry2",
         ("HunterQry2",)),
    Form("uri-query-encoded-key", "postgresql://127.0.0.1:1/ledgerdb?pass%77ord=HunterQry3", ("HunterQry3",)),
    Form("bad-ipv6", "postgresql://ledger_ro:HunterBad1@[::1/ledgerdb", ("HunterBad1",), ("::1", "ledgerdb")),
    Form("bad-keyword-space", "host=127.0.0.1 port=1 password=HunterBad2 XyzzyTail2 dbname=ledgerdb",
         ("HunterBad2", "XyzzyTail2"), ("127.0.0.1",)),
    Form("bad-keyword-quote", "host=127.0.0.1 password='HunterBad3 XyzzyTail3 dbname=ledgerdb",
         ("HunterBad3", "XyzzyTail3"), ("127.0.0.1",)),
    Form("bad-keyword-no-equals", "host=127.0.0.1 password=HunterBad4 XyzzyTail4", ("HunterBad4", "XyzzyTail4"),
         ("127.0.0.1",)),
    Form("bad-query-extra-equals", "postgresql://ledger_ro@127.0.0.1:1/ledgerdb?password=HunterBad5=XyzzyTail5",
         ("HunterBad5", "XyzzyTail5")),
    Form("unencoded-at", "postgresql://ledger_ro:HunterBad6@XyzzyTail6@127.0.0.1:1/ledgerdb",
         ("HunterBad6", "XyzzyTail6")),
    Form("unencoded-slash", "postgresql://ledger_ro:HunterBad7/XyzzyTail7@127.0.0.1:1/ledgerdb",
         ("HunterBad7", "XyzzyTail7")),
    Form("unencoded-slash-in-user", "postgresql://ledger/ro:HunterBad8@127.0.0.1:1/ledgerdb",
         ("HunterBad8",)),
]
IDS = [f.id for f in FORMS]


def assert_clean(text: str, form: Form, *, named: bool = True) -> None:
    low = text.lower()
    for s in form.secrets:
        assert s.lower() not in low, f"{form.id}: {s!r} leaked in:\n{text}"
    assert "hunter" not in low, f"{form.id}: password fragment leaked in:\n{text}"
    if named:
        for s in form.shown:
            assert s in text, f"{form.id}: message should still name {s!r}:\n{text}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at DEBUG, psycopg's own included (it logs hosts and libpq errors there)."""
    caplog.set_level(logging.INFO, logger="mlseal.audit")  # first: set_level also sets the handler's level
    caplog.set_level(logging.DEBUG, logger="mlseal")
    caplog.set_level(logging.DEBUG, logger="psycopg")
    caplog.set_level(logging.DEBUG)
    yield caplog


def all_logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text + "\n".join(r.getMessage() for r in caplog.records)


# --- the redaction itself -------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_redact_dsn_hides_every_form(form: Form) -> None:
    shown = redact_dsn(form.dsn)
    assert_clean(shown, form)
    assert "***" in shown
    assert redact_url(form.dsn) == shown
    assert redact_dsn(shown) == shown  # idempotent: a redacted DSN inside a message stays as it is


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://app:pw@db.example:5432/ledger?sslmode=require&options=-csearch_path%3Dx",
     "postgresql://app:***@db.example:5432/ledger?sslmode=require&options=-csearch_path%3Dx"),
    ("postgresql://app@h1:5432,h2:5433/ledger", "postgresql://app@h1:5432,h2:5433/ledger"),
    ("host=db user=app password=x dbname=ledger sslmode=verify-full",
     "host=db user=app password=*** dbname=ledger sslmode=verify-full"),
    ("host = db  password = 'a b'  dbname=ledger", "host=db password=*** dbname=ledger"),
    ("host=h1,h2 port=1,2 options='-c search_path=x' dbname=ledger",
     "host=h1,h2 port=1,2 options='-c search_path=x' dbname=ledger"),
    ("host=db;password=x;dbname=ledger", "host=db;***"),
    ("postgresql://h/db?frobnicate=zz", "postgresql://h/db?frobnicate=***"),  # unknown key: hidden
    ("postgresql://h/db?%7Ez=zz", "postgresql://h/db?***"),
    ("postgresql:user:pw@host", "postgresql:***"),
    ("sqlite:////tmp/x/ledger.db", "sqlite:////tmp/x/ledger.db"),
    ("sqlite:///rel/ledger.db?mode=ro", "sqlite:///rel/ledger.db?mode=ro"),
    ("just-a-path.db", "just-a-path.db"),
    ("user:pw@host", "user:***"),
    ("a b:c", "***"),
])
def test_redact_dsn_keeps_what_identifies_the_ledger(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


def test_scrub_removes_what_libpq_echoes() -> None:
    dsn = "postgresql://u:Hunter9@[::1/ledgerdb"
    msg = f'end of string reached when looking for matching "]" in IPv6 host address in URI: "{dsn}"'
    out = scrub(msg, dsn)
    assert "Hunter9" not in out and '"postgresql://u:***@[::1/ledgerdb"' in out and '"]"' in out
    dsn = "host=h password=Hunter1 Piece2 dbname=d"
    assert scrub('missing "=" after "Piece2" in connection info string', dsn) == (
        'missing "=" after "***" in connection info string')
    dsn = "postgresql://u:p@Piece3@h/db"
    assert scrub("failed to resolve host 'Piece3@h': nope", dsn) == "failed to resolve host '***': nope"
    # what the redacted DSN shows anyway stays, so the message still says what failed
    dsn = "postgresql://u:Hunter2@db.example:5432/ledgerdb"
    msg = 'connection to server at "db.example" (10.0.0.1), port 5432 failed: FATAL: role "u" does not exist'
    assert scrub(msg, dsn) == msg
    assert scrub("password Hunter2 was echoed", dsn) == "password *** was echoed"


def test_redact_text_without_the_dsn() -> None:
    text = ("x postgresql://u:Hunter3@h/db?sslpassword=Hunter4 y host=h password='Hunter 5' z "
            "https://a:Hunter6@store/m?versionId=7")
    out = redact_text(text)
    assert "Hunter" not in out
    assert "postgresql://u:***@h/db?sslpassword=***" in out and "versionId=7" in out


def test_psycopg_log_records_are_scrubbed(debug_logs: pytest.LogCaptureFixture) -> None:
    from mlseal.ledger import _postgres

    dsn = "host=h password=HunterLog1 dbname=ledgerdb"
    token = _postgres._CONNECTING.set(dsn)
    try:
        logging.getLogger("psycopg").debug("connection failed: %s", "echo of 'HunterLog1' and password=HunterLog1")
    finally:
        _postgres._CONNECTING.reset(token)
    logging.getLogger("psycopg").debug("outside a connect: postgresql://u:HunterLog2@h/db")
    text = all_logged(debug_logs)
    assert "HunterLog" not in text and "connection failed" in text and "postgresql://u:***@h/db" in text


# --- open_ledger: every DSN form, unreachable or malformed ----------------------------

@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_open_ledger_errors_carry_no_password(form: Form, debug_logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises((ConfigurationError, InfrastructureError)) as exc:
        open_ledger(form.dsn, create=False)
    # no chained psycopg error whose text a traceback would print
    assert exc.value.__cause__ is None and (exc.value.__context__ is None or exc.value.__suppress_context__)
    assert_clean(str(exc.value) + repr(exc.value), form)
    assert_clean(all_logged(debug_logs), form, named=False)


def test_password_parts_never_reach_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq would resolve 'XyzzyTail6@127.0.0.1' as a host name: refused before any I/O."""
    import socket

    looked_up: list[Any] = []

    def getaddrinfo(*a: Any, **k: Any) -> list[Any]:
        looked_up.append(a)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for dsn in ("postgresql://u:HunterBad6@XyzzyTail6@127.0.0.1:1/ledgerdb",
                "postgresql://u:HunterBad7/XyzzyTail7@127.0.0.1:1/ledgerdb"):
        with pytest.raises(ConfigurationError, match="percent-encode"):
            open_ledger(dsn, create=False)
    assert looked_up == []


# --- (a) mlseal ledger verify / init ----------------------------------------------------

@pytest.mark.parametrize("form", FORMS, ids=IDS)
@pytest.mark.parametrize("command", ["verify", "verify-json", "init-json"])
def test_cli_ledger_errors_carry_no_password(form: Form, command: str, admission_world: AdmissionWorld,
                                             capsys: pytest.CaptureFixture[str],
                                             debug_logs: pytest.LogCaptureFixture) -> None:
    from mlseal.cli import main

    trust = str(admission_world.dir / "trust.yaml")
    argv = {
        "verify": ["ledger", "verify", "--ledger", form.dsn, "--trust", trust],
        "verify-json": ["ledger", "verify", "--ledger", form.dsn, "--trust", trust, "--json"],
        "init-json": ["ledger", "init", "--ledger", form.dsn, "--grant-reader", "mlseal_ro", "--json"],
    }[command]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.err.startswith("mlseal: error: ledger ")
    assert_clean(out.err, form)
    assert_clean(out.out, form, named=False)
    assert_clean(all_logged(debug_logs), form, named=False)


# --- (b) mlseal admit with a policy naming the ledger ---------------------------------

@pytest.mark.parametrize("form", FORMS, ids=IDS)
def test_admit_errors_carry_no_password(form: Form, admission_world: AdmissionWorld, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        debug_logs: pytest.LogCaptureFixture) -> None:
    from mlseal.cli import main

    manifest = tmp_path / "isvc.json"
    manifest.write_text(json.dumps(isvc(admission_world.models["good"])))
    inline = write_policy(admission_world.dir, f"dsn-{form.id}.yaml", ledger=form.dsn)
    url_file = tmp_path / "ledger-url"  # what Vault Agent renders
    url_file.write_text(form.dsn + "\n")
    from_file = write_policy(admission_world.dir, f"dsn-file-{form.id}.yaml", ledger={"url_file": str(url_file)})
    for policy in (inline, from_file):
        for extra in ([], ["--json"]):
            assert main(["admit", str(manifest), "--policy", str(policy), *extra]) == 2
            out = capsys.readouterr()
            assert "mlseal: error: ledger " in out.err
            assert_clean(out.err, form)
            assert_clean(out.out, form, named=False)
    assert_clean(all_logged(debug_logs), form, named=False)


def test_admit_decision_without_an_open_ledger_is_redacted(admission_world: AdmissionWorld) -> None:
    """decide() opening the policy's ledger itself: an unreachable one denies, redacted."""
    from mlseal.admission import decide

    form = FORMS[0]
    policy = load_policy(write_policy(admission_world.dir, "dsn-decide.yaml", ledger=form.dsn))
    decision = decide(isvc(admission_world.models["good"]), policy)
    assert not decision.allowed
    assert_clean("; ".join(decision.reasons), form)


# --- (c) the webhook: a real AdmissionReview over TLS ---------------------------------

def test_webhook_denials_and_logs_carry_no_password(webhook_factory: Any, admission_world: AdmissionWorld,
                                                    tmp_path: Path, debug_logs: pytest.LogCaptureFixture) -> None:
    url_file = tmp_path / "ledger-url"
    url_file.write_text(FORMS[0].dsn)
    server: RunningWebhook = webhook_factory(
        load_policy(write_policy(admission_world.dir, "dsn-webhook.yaml", ledger={"url_file": str(url_file)})))
    for i, form in enumerate(FORMS):
        url_file.write_text(form.dsn + "\n")  # read again at each connect
        server.controller.follow()  # connect now (the server's follower thread does so every 0.1 s)
        debug_logs.clear()
        out = server.validate(review(isvc(admission_world.models["good"]), uid=f"dsn-{i}"))
        r = out["response"]
        assert r["allowed"] is False and r["uid"] == f"dsn-{i}"
        message = r["status"]["message"]
        assert "ledger is unreachable" in message
        assert_clean(message, form)
        assert_clean(json.dumps(out), form)
        logged = all_logged(debug_logs)
        assert f'"uid": "dsn-{i}"' in logged  # the audit line was captured, and is clean
        assert_clean(logged, form, named=False)


def test_webhook_inline_keyword_dsn(webhook_factory: Any, admission_world: AdmissionWorld,
                                    debug_logs: pytest.LogCaptureFixture) -> None:
    form = FORMS[1]
    server = webhook_factory(load_policy(write_policy(admission_world.dir, "dsn-inline.yaml", ledger=form.dsn)))
    r = server.validate(review(isvc(admission_world.models["good"], namespace="staging")))["response"]
    assert r["allowed"] is False  # warn mode fails closed too
    assert_clean(r["status"]["message"], form)
    assert_clean(all_logged(debug_logs), form, named=False)


def test_webhook_traceback_of_a_foreign_error_is_redacted(webhook_factory: Any, admission_world: AdmissionWorld,
                                                          debug_logs: pytest.LogCaptureFixture) -> None:
    """A driver error that is not mlseal's: the denial names its type only, the logged
    traceback (kept for debugging) has its DSN redacted."""

    def factory() -> Any:
        raise RuntimeError("cannot reach postgresql://ledger_ro:HunterTb1@127.0.0.1:1/ledgerdb "
                           "(host=127.0.0.1 password=HunterTb2 dbname=ledgerdb)")

    server = webhook_factory(admission_world.policy, ledger_factory=factory)
    r = server.validate(review(isvc(admission_world.models["good"])))["response"]
    assert r["allowed"] is False and "(RuntimeError)" in r["status"]["message"]
    formatted = debug_logs.text
    assert "Traceback" in formatted and "RuntimeError" in formatted
    assert "postgresql://ledger_ro:***@127.0.0.1:1/ledgerdb" in formatted
    assert "HunterTb" not in all_logged(debug_logs) + json.dumps(r)


# --- a reachable server: errors after connecting --------------------------------------

@pytest.mark.postgres
def test_live_ledger_errors_carry_no_password(pg_url: str, debug_logs: pytest.LogCaptureFixture) -> None:
    """Connected with a password in the DSN: a foreign schema, then a dropped connection."""
    import uuid

    import psycopg

    app = f"dsn_{uuid.uuid4().hex[:10]}"
    dsn = f"{pg_url}&password=HunterLive1&sslpassword=HunterLive2&application_name={app}"
    with pytest.raises(ConfigurationError) as exc:
        open_ledger(dsn, create=False)  # the schema is empty: no ledger there
    assert "no mlseal ledger" in str(exc.value) and "password=***" in str(exc.value)
    assert "HunterLive" not in str(exc.value)
    with open_ledger(dsn, create=True) as led:
        assert "HunterLive" not in repr(led) + led.url
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          (app,))
        with pytest.raises(InfrastructureError) as exc2:
            led.head()
    assert isinstance(exc2.value, Error) and exc2.value.__cause__ is None
    assert "read failed" in str(exc2.value) and "HunterLive" not in str(exc2.value)
    assert "HunterLive" not in all_logged(debug_logs)
