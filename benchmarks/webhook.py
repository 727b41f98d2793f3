"""Admission webhook latency and throughput against a 100,000-entry ledger.

    python benchmarks/webhook.py [--entries 100000] [--duration 6] [--keep DIR]

Builds a SQLite ledger of pipeline runs through the ledger library (ingest ->
anonymize -> train -> evaluate -> deploy, 5 records per run; every 10th model fails its
accuracy gate), starts `mlseal webhook serve` as a subprocess (the production command,
TLS, audit log on), and drives it from this process with N concurrent keep-alive HTTPS
clients sending real AdmissionReview v1 JSON for models drawn from the ledger.

The server verifies the whole ledger into its in-memory view at start (the time until
/readyz answers 200 is reported, with the server's resident memory once ready), then
decides every review from that view.

Scenarios, each at 8 and 32 clients:
- healthz: GET /healthz on the same server, the HTTP+TLS baseline;
- validate warm: POST /validate with the decision cache warm (the steady state: the
  same few hundred models are reviewed again and again on every pod restart/scale);
- validate, no decision cache (--cache-size 0): every request walks the model's lineage
  and gates in the verified view of the 100k ledger.

Baselines measured in the same run: hashlib.sha256 throughput, and the in-process
engine (`check_model` on a `VerifiedView`, no HTTP) per decision. Targets: no decision
cache, 32 clients: >= 2,000 decisions/s and p99 <= 20 ms; warm: >= 5,000 decisions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlseal.admission import load_policy  # noqa: E402
from mlseal.admission.engine import check_model  # noqa: E402
from mlseal.admission.manifest import model_ref  # noqa: E402
from mlseal.ledger import open_ledger  # noqa: E402
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex  # noqa: E402
from mlseal.ledger.verified import VerifiedView  # noqa: E402
from mlseal.signing.keys import LocalKeySigner  # noqa: E402
from tests.fixtures_admission import isvc, make_pki, review, write_policy  # noqa: E402


def h(text: str) -> Sha256Hex:
    return Sha256Hex(hashlib.sha256(text.encode()).hexdigest())


def build_ledger(d: Path, entries: int) -> tuple[str, list[tuple[str, str]]]:
    """A ledger of `entries` records (runs of 5); returns its URL and the (sha, uri) of each model."""
    signer = LocalKeySigner.generate()
    signer.save(d / "keys" / "pipeline.pem", d / "keys" / "pipeline.pub.pem")
    (d / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    url = "sqlite:///" + str(d / "ledger.db")
    models: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    with open_ledger(url) as led:
        def a(draft: RecordDraft) -> int:
            return led.append(draft, signer, signer_name="pipeline").seq

        for run in range(entries // 5):
            raw = OutputRef(name="raw", uri=f"s3://data/{run}/raw.csv", sha256=h(f"{run}/raw"))
            s_raw = a(RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)))
            clean = OutputRef(name="clean", uri=f"s3://data/{run}/clean.csv", sha256=h(f"{run}/clean"))
            s_clean = a(RecordDraft(stage="process", component=Component(name="anonymize"), outputs=(clean,),
                                    inputs=(InputRef("raw", raw.uri, raw.sha256, s_raw),)))
            model = OutputRef(name="model", uri=f"s3://models/{run}/model.joblib", sha256=h(f"{run}/model"))
            s_model = a(RecordDraft(stage="train", component=Component(name="train"), outputs=(model,),
                                    inputs=(InputRef("data", clean.uri, clean.sha256, s_clean),)))
            acc = 0.5 if run % 10 == 9 else 0.95
            a(RecordDraft(stage="evaluate", component=Component(name="evaluate"),
                          inputs=(InputRef("model", model.uri, model.sha256, s_model),
                                  InputRef("test", clean.uri, clean.sha256, s_clean)),
                          metrics={"accuracy": acc, "robust_accuracy": 0.8}))
            a(RecordDraft(stage="deploy", component=Component(name="deploy"),
                          inputs=(InputRef("model", model.uri, model.sha256, s_model),)))
            models.append((model.sha256, model.uri))
        size = led.size()
    print(f"# built {size} entries in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return url, models


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, d: Path, policy: Path, cache_size: int, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        tls = d / "tls"
        self.pki = make_pki(tls)
        self.pki.issue(tls / "tls.crt", tls / "tls.key")
        self.audit = open(d / f"audit-{cache_size}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlseal.cli", "webhook", "serve", "--policy", str(policy),
             "--tls-cert", str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key"), "--host", "127.0.0.1",
             "--port", str(self.port), "--cache-size", str(cache_size), *extra],
            stdout=self.audit, stderr=subprocess.PIPE, cwd=REPO,
        )
        assert self.proc.stderr is not None  # stderr=PIPE
        ctx = self.pki.client_context()
        t0 = time.monotonic()
        deadline = t0 + 600
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                    conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n")
                    if conn.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not get ready: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        self.ready_s = time.monotonic() - t0
        self.rss_mb = rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.audit.close()


async def client(port: int, ctx: ssl.SSLContext, requests: list[bytes], stop_at: float, measure_from: float,
                 latencies: list[float], seed: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    rnd = random.Random(seed)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    denied = 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        req = requests[rnd.randrange(len(requests))]
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        done = time.perf_counter()
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response {head[:60]!r}")
        if b'"allowed": false' in body:
            denied += 1
        if now >= measure_from:
            latencies.append(done - now)
    writer.close()
    return denied


def http_requests(path: str, bodies: list[bytes]) -> list[bytes]:
    if path == "/healthz":
        return [b"GET /healthz HTTP/1.1\r\nHost: webhook\r\n\r\n"]
    return [b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies]


def load(server: Server, requests: list[bytes], clients: int, warmup: float, duration: float) -> dict[str, Any]:
    async def main() -> tuple[list[float], int]:
        ctx = server.pki.client_context()
        start = time.perf_counter()
        latencies: list[float] = []
        denied = await asyncio.gather(*[
            client(server.port, ctx, requests, start + warmup + duration, start + warmup, latencies, i)
            for i in range(clients)
        ])
        return latencies, sum(denied)

    lat, denied = asyncio.run(main())
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"n": len(lat), "rate": len(lat) / duration, "p50": q[49] * 1000, "p99": q[98] * 1000, "denied": denied}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=6.0, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--models", type=int, default=500, help="distinct models the clients review")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--reuse", metavar="DIR", help="use the ledger already built in DIR by an earlier --keep run")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `mlseal webhook serve` (repeatable)")
    args = ap.parse_args()

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(args.reuse or args.keep or tempfile.mkdtemp(prefix="mlseal-bench-", dir=shm))
    d.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse:
            url = "sqlite:///" + str(d / "ledger.db")
            models = [tuple(m) for m in json.loads((d / "models.json").read_text())]
        else:
            url, models = build_ledger(d, args.entries)
            (d / "models.json").write_text(json.dumps(models))
        policy_path = write_policy(d, ledger=url)
        policy = load_policy(policy_path)

        # baseline 1: sha256 throughput on this machine, now
        blob = os.urandom(64 * 1024 * 1024)
        t = time.perf_counter()
        hashlib.sha256(blob).digest()
        sha_mbs = len(blob) / (time.perf_counter() - t) / 1e6
        del blob

        rnd = random.Random(7)
        chosen = rnd.sample(models, min(args.models, len(models)))
        # baseline 2: the engine in-process, uncached
        refs = [model_ref(isvc_doc) for isvc_doc in (isvc_for(s, u) for s, u in chosen)]
        with open_ledger(url, create=False) as led:
            view = VerifiedView(led, policy.trust)
            rules = policy.rules_for("prod")
            t = time.perf_counter()
            n_engine = 0
            while time.perf_counter() - t < 2.0:
                ref = refs[n_engine % len(refs)]
                assert ref is not None
                check_model(ref, rules, view, policy.trust)
                n_engine += 1
            engine_ms = (time.perf_counter() - t) / n_engine * 1000

        bodies = [json.dumps(review(isvc_for(s, u), uid=f"bench-{i}")).encode() for i, (s, u) in enumerate(chosen)]
        rows: list[tuple[str, int, dict[str, Any]]] = []
        servers: list[tuple[str, float, float]] = []
        configs = ((4096, "validate warm (decision cache)", ()),
                   (0, "validate, no decision cache", ()),
                   (0, "same, decided on threads", ("--inline-max", "0")))
        for cache_size, label, flags in configs:
            server = Server(d, policy_path, cache_size, (*flags, *args.server_arg))
            servers.append((f"--cache-size {cache_size} {' '.join(flags)}".strip(), server.ready_s, server.rss_mb))
            try:
                for clients in (8, 32):
                    rows.append(("healthz (HTTP+TLS baseline)", clients,
                                 load(server, http_requests("/healthz", []), clients, args.warmup, args.duration)))
                if cache_size:  # fill the cache once, then measure
                    load(server, http_requests("/validate", bodies), 8, 0.0, 2.0)
                for clients in (8, 32):
                    rows.append((label, clients,
                                 load(server, http_requests("/validate", bodies), clients, args.warmup,
                                      args.duration)))
            finally:
                server.stop()

        print(f"\nmlseal webhook benchmark: {args.entries:,}-entry SQLite ledger, {len(chosen)} distinct models "
              f"(10% fail a gate), {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
              "server + client on this machine\n")
        print(f"baseline: sha256 {sha_mbs:,.0f} MB/s; engine in-process on the verified view (no HTTP, uncached) "
              f"{engine_ms:.3f} ms/decision\n")
        for name, ready, rss in servers:
            print(f"server {name}: verified view of {args.entries:,} entries ready in {ready:.1f}s, "
                  f"RSS {rss:.0f} MB once ready")
        print()
        print(f"| {'scenario':32} | clients | req/s  | p50 ms | p99 ms | vs healthz req/s | denied |")
        print(f"|{'-' * 34}|---------|--------|--------|--------|------------------|--------|")
        for i, (name, c, r) in enumerate(rows):
            base = next(x for n, cc, x in reversed(rows[:i + 1]) if n.startswith("healthz") and cc == c)
            print(f"| {name:32} | {c:7d} | {r['rate']:6.0f} | {r['p50']:6.2f} | {r['p99']:6.2f} | "
                  f"{r['rate'] / base['rate']:16.2f} | {r['denied']:6d} |")
        cold = max((r for name, c, r in rows if c == 32 and (name.startswith("validate, no") or
                                                             name.startswith("same,"))), key=lambda r: r["rate"])
        warm = next(r for name, c, r in rows if name.startswith("validate warm") and c == 32)
        checks = [
            (f"no decision cache, 32 clients (faster mode): >= 2,000 decisions/s: {cold['rate']:.0f}/s",
             cold["rate"] >= 2000),
            (f"no decision cache, 32 clients: p99 <= 20 ms: {cold['p99']:.2f} ms", cold["p99"] <= 20),
            (f"decision cache, 32 clients: >= 5,000 decisions/s: {warm['rate']:.0f}/s", warm["rate"] >= 5000),
        ]
        print()
        for text, ok in checks:
            print(f"target {text} {'PASS' if ok else 'FAIL'}")
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(d, ignore_errors=True)


def isvc_for(sha256: str, uri: str) -> dict[str, Any]:
    from tests.fixtures_admission import Model

    return isvc(Model(sha256, uri))


if __name__ == "__main__":
    sys.exit(main())
