"""Attacks on the webhook's HTTP side: slow clients, large bodies, many bodies at once, a
stalled ledger, and SIGTERM with clients still connected.

Each server runs on 127.0.0.1 with small limits so that every attack ends within a few
seconds; loops are bounded and end as soon as the server reacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from mlseal.admission._server import ServeLimits, build_server
from tests.fixtures_admission import AdmissionWorld, Model, Pki, isvc, make_pki, review, sha

ROOT = Path(__file__).resolve().parents[1]


class Served:
    def __init__(self, server: uvicorn.Server, port: int, pki: Pki) -> None:
        self.server, self.port, self.pki = server, port, pki

    @property
    def app(self) -> Any:
        return self.server.config.app

    def tls(self, timeout: float = 10) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


@contextlib.contextmanager
def serving(world: AdmissionWorld, tmp: Path, *, wait_view: bool = True, **kwargs: Any) -> Iterator[Served]:
    pki = make_pki(tmp)
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    pki.issue(cert, key)
    server, controller = build_server(world.policy, cert=cert, key=key, host="127.0.0.1", port=0, **kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.02)
    assert server.started
    if wait_view:
        controller.attempted.wait(30)
    try:
        yield Served(server, sock.getsockname()[1], pki)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def head(length: int | None = None, chunked: bool = False) -> bytes:
    h = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if length is not None:
        h += b"Content-Length: %d\r\n" % length
    if chunked:
        h += b"Transfer-Encoding: chunked\r\n"
    return h + b"\r\n"


def read_response(s: ssl.SSLSocket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    return int(top.split(b" ")[1]), json.loads(rest)


def dropped_while_trickling(s: ssl.SSLSocket, data: bytes, pause: float, rounds: int) -> bool:
    """Send `data` one byte per `pause` seconds; True once the server has closed on us."""
    s.settimeout(pause)
    for i in range(rounds):
        try:
            s.sendall(data[i % len(data):i % len(data) + 1])
            if s.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return True
    return False


@pytest.fixture(params=["httptools", "h11"])
def small(admission_world: AdmissionWorld, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """Both of uvicorn's HTTP parsers carry the read deadline."""
    limits = ServeLimits(max_body=4096, max_buffered=8192, read_timeout=0.5, keep_alive=1)
    with serving(admission_world, tmp_path, limits=limits, reload_interval=0.1, http=request.param) as s:
        http = s.server.config.http  # the protocol class mlseal gives uvicorn
        assert isinstance(http, type)
        assert request.param.lower() in http.__mro__[2].__name__.lower()
        yield s


# 1. bounded read time ---------------------------------------------------------------

def test_slow_headers_are_dropped(small: Served) -> None:
    # one byte every 0.1 s, against a 0.5 s read deadline; 100 rounds would be 10 s
    with small.tls() as s:
        assert dropped_while_trickling(s, head(10)[:-2] + b"X-Pad: " + b"a" * 200, 0.1, 100)


def test_slow_body_is_dropped(small: Served) -> None:
    with small.tls() as s:
        s.sendall(head(1000))
        assert dropped_while_trickling(s, b"{" + b" " * 998 + b"}", 0.1, 100)


def test_connection_that_sends_nothing_is_dropped(small: Served) -> None:
    with small.tls() as s:
        s.settimeout(10)
        assert s.recv(1) == b""


def test_half_sent_pipelined_request_is_dropped(small: Served, admission_world: AdmissionWorld) -> None:
    body = json.dumps(review(isvc(admission_world.models["good"]))).encode()
    with small.tls() as s:
        s.sendall(head(len(body)) + body + head(len(body)) + body[:10])  # then silence
        assert read_response(s)[0] == 200
        s.settimeout(10)
        assert s.recv(1) == b""


def test_tcp_client_that_never_starts_tls_is_dropped(small: Served) -> None:
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as raw:
        assert raw.recv(1) == b""


def test_prompt_keep_alive_requests_are_not_dropped(small: Served, admission_world: AdmissionWorld) -> None:
    body = json.dumps(review(isvc(admission_world.models["good"]))).encode()
    with small.tls() as s:
        for _ in range(3):
            s.sendall(head(len(body)) + body)
            status, out = read_response(s)
            assert status == 200 and out["response"]["allowed"] is True


# 2. bounded memory --------------------------------------------------------------------

def test_body_over_the_cap_is_refused_by_content_length(small: Served) -> None:
    with small.tls() as s:
        s.sendall(head(4097))  # no body is sent: the answer must not wait for it
        status, out = read_response(s)
    assert status == 413 and out["response"]["allowed"] is False
    assert "exceeds the limit of 4096" in out["response"]["status"]["message"]


def test_body_over_the_cap_is_refused_while_streaming(small: Served) -> None:
    with small.tls() as s:
        # no Content-Length: five 1 KiB chunks, and the body is never finished
        s.sendall(head(chunked=True) + (b"400\r\n" + b" " * 0x400 + b"\r\n") * 5)
        status, out = read_response(s)
    assert status == 413 and out["response"]["allowed"] is False


def test_bodies_beyond_the_shared_budget_are_denied(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    limits = ServeLimits(max_body=4096, max_buffered=8192, read_timeout=30)
    with serving(admission_world, tmp_path, limits=limits) as srv:
        holders = [srv.tls(), srv.tls()]
        for h in holders:
            h.sendall(head(4000) + b"{")  # announced, then stalled
        for _ in range(500):
            if srv.app.state.budget.used >= 8000:
                break
            time.sleep(0.01)
        assert srv.app.state.budget.used == 8000
        with srv.tls() as s:
            s.sendall(head(400))
            status, out = read_response(s)
        assert status == 503 and out["response"]["allowed"] is False
        assert "too many request bodies" in out["response"]["status"]["message"]
        for h in holders:
            h.close()
        for _ in range(500):
            if srv.app.state.budget.used == 0:
                break
            time.sleep(0.01)
        assert srv.app.state.budget.used == 0


# 3. bounded decision pool -------------------------------------------------------------

def test_stalled_ledger_denies_at_once_and_grows_nothing(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    """Decisions never touch the ledger: a stalled ledger holds only the one thread that
    follows it, and every review is denied at once instead of waiting for it."""
    release = threading.Event()
    opened: list[int] = []

    def stalled_ledger() -> Any:
        opened.append(threading.get_ident())
        release.wait(30)
        raise ConnectionError("ledger unreachable")

    threads_before = threading.active_count()
    try:
        limits = ServeLimits(decision_backlog=2)
        with serving(admission_world, tmp_path, threads=2, decision_timeout=0.3, ledger_factory=stalled_ledger,
                     limits=limits, wait_view=False) as srv:
            body = json.dumps(review(isvc(Model(sha("never-seen"), "s3://x")))).encode()
            for _ in range(8):
                t = time.monotonic()
                with srv.tls() as s:
                    s.sendall(head(len(body)) + body)
                    status, out = read_response(s)
                assert time.monotonic() - t < 2
                assert status == 200 and out["response"]["allowed"] is False
                assert "still reading and verifying the ledger" in out["response"]["status"]["message"]
            # nothing waits in the pool; one thread (the follower) opened the ledger, once
            assert srv.app.state.pool.busy == 0
            assert len(opened) == 1
            # the server's own threads (uvicorn's, the follower) are all that was added
            assert threading.active_count() <= threads_before + 1 + 1
    finally:
        release.set()


# 4. graceful shutdown -----------------------------------------------------------------

def test_sigterm_stops_with_idle_and_half_sent_clients(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    pki.issue(cert, key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlseal.cli", "webhook", "serve", "--policy", str(admission_world.policy_path),
         "--tls-cert", str(cert), "--tls-key", str(key), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    clients: list[ssl.SSLSocket] = []
    try:
        srv = Served(None, port, pki)  # type: ignore[arg-type]
        for _ in range(500):
            try:
                idle = srv.tls()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
        body = json.dumps(review(isvc(admission_world.models["good"]))).encode()
        idle.sendall(head(len(body)) + body)
        assert read_response(idle)[0] == 200  # now an idle keep-alive connection
        half_body, half_head = srv.tls(), srv.tls()
        half_body.sendall(head(len(body)) + body[:10])
        half_head.sendall(head(len(body))[:20])
        clients += [idle, half_body, half_head]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)  # a behavioural bound: the pod's grace period must not be needed
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--max-body=0", "--max-buffered=0", "--read-timeout=0", "--max-connections=0",
                                  "--decision-backlog=-1"])
def test_serve_refuses_nonsense_limits(flag: str, admission_world: AdmissionWorld,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mlseal.cli import main

    rc = main(["webhook", "serve", "--policy", str(admission_world.policy_path), "--tls-cert", "x", "--tls-key", "y",
               flag])
    assert rc == 2
    assert flag.split("=")[0].lstrip("-").replace("-", "_") in capsys.readouterr().err


def test_buffer_budget_below_body_cap_is_refused() -> None:
    from mlseal.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_buffered"):
        ServeLimits(max_body=2048, max_buffered=1024)


# 5. NetworkPolicy ---------------------------------------------------------------------

def test_network_policy_admits_only_the_webhook_port_and_reaches_only_dns_ledger_vault() -> None:
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "infra/k8s/base/networkpolicy.yaml").read_text()))
    (netpol,) = [d for d in docs if d and d["metadata"]["name"] == "mlseal-webhook"]
    deploy = yaml.safe_load((ROOT / "infra/k8s/base/deployment.yaml").read_text())
    ports = {p["containerPort"] for c in deploy["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    spec = netpol["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {(p["port"], p["protocol"]) for rule in spec["ingress"] for p in rule["ports"]}
    assert ingress_ports == {(port, "TCP") for port in ports} == {(8443, "TCP")}
    egress_ports = set()
    for rule in spec["egress"]:
        assert rule.get("to"), "an egress rule without peers would allow every destination"
        assert rule.get("ports"), "an egress rule without ports would allow every port"
        egress_ports |= {(p["port"], p["protocol"]) for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (8200, "TCP")}
    vault = next(rule for rule in spec["egress"] if rule["ports"][0]["port"] == 8200)
    for peer in vault["to"]:  # Vault's server pods, not every pod of its namespace
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vault"}


def test_decision_pool_queues_a_bounded_burst_on_fixed_threads() -> None:
    from mlseal.admission._server import DecisionPool

    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> str:
        gate.wait(30)
        ran.append(threading.current_thread().name)
        return name

    pool = DecisionPool(1, backlog=1)
    first, second = pool.try_submit(job, "a"), pool.try_submit(job, "b")
    assert first is not None and second is not None  # one running, one waiting: a burst is served
    assert pool.try_submit(job, "c") is None  # beyond the backlog: refused at once
    gate.set()
    assert (first.result(30), second.result(30)) == ("a", "b")
    assert len(set(ran)) == 1  # both on the pool's one thread
    for _ in range(500):
        if pool.busy == 0:
            break
        time.sleep(0.01)
    assert pool.busy == 0 and pool.try_submit(job, "d") is not None
