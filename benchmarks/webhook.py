"""Admission webhook latency and throughput against a 100,000-entry ledger.

    python benchmarks/webhook.py [--entries 100000] [--duration 6] [--keep DIR]

Builds a SQLite ledger of pipeline runs through the ledger library (ingest ->
anonymize -> train -> evaluate -> deploy, 5 records per run; every 10th model fails its
accuracy gate), starts `mlseal webhook serve` as a subprocess (the production command,
TLS, audit log on), and drives it from this process with N concurrent keep-alive HTTPS
clients sending real AdmissionReview v1 JSON for models drawn from the ledger.

Scenarios, each at 8 and 32 clients:
- healthz: GET /healthz on the same server, the HTTP+TLS baseline;
- validate warm: POST /validate with the decision cache warm (the steady state: the
  same few hundred models are reviewed again and again on every pod restart/scale);
- validate, records cached: decision cache off (--cache-size 0), every request walks the
  model's lineage and gates in the 100k ledger, reusing signature checks of records whose
  entry bytes were verified before (--verified-records, the default);
- validate cold: no cache at all (--cache-size 0 --verified-records 0): every request
  fetches, signature-checks and hash-link-checks every record of the lineage.

Baselines measured in the same run: hashlib.sha256 throughput, and the in-process
engine (`check_model`, no HTTP) per decision. Targets (issue 5): p99 <= 50 ms warm at 8
clients and >= 500 decisions/s.
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
    models = []
    t0 = time.perf_counter()
    with open_ledger(url) as led:
        for run in range(entries // 5):
            a = lambda draft: led.append(draft, signer, signer_name="pipeline").seq  # noqa: E731
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, d: Path, policy: Path, cache_size: int, verified: int = 100_000) -> None:
        self.port = free_port()
        tls = d / "tls"
        self.pki = make_pki(tls)
        self.pki.issue(tls / "tls.crt", tls / "tls.key")
        self.audit = open(d / f"audit-{cache_size}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlseal.cli", "webhook", "serve", "--policy", str(policy),
             "--tls-cert", str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key"), "--host", "127.0.0.1",
             "--port", str(self.port), "--cache-size", str(cache_size), "--verified-records", str(verified)],
            stdout=self.audit, stderr=subprocess.PIPE, cwd=REPO,
        )
        ctx = self.pki.client_context()
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)

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
    args = ap.parse_args()

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mlseal-bench-", dir=shm))
    d.mkdir(parents=True, exist_ok=True)
    try:
        url, models = build_ledger(d, args.entries)
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
            rules = policy.rules_for("prod")
            t = time.perf_counter()
            n_engine = 0
            while time.perf_counter() - t < 2.0:
                ref = refs[n_engine % len(refs)]
                assert ref is not None
                check_model(ref, rules, led, policy.trust)
                n_engine += 1
            engine_ms = (time.perf_counter() - t) / n_engine * 1000

        bodies = [json.dumps(review(isvc_for(s, u), uid=f"bench-{i}")).encode() for i, (s, u) in enumerate(chosen)]
        rows: list[tuple[str, int, dict[str, Any]]] = []
        configs = ((4096, 100_000, "validate warm (decision cache)"),
                   (0, 100_000, "validate, records cached"),
                   (0, 0, "validate cold (no cache)"))
        for cache_size, verified, label in configs:
            server = Server(d, policy_path, cache_size, verified)
            try:
                if cache_size:
                    for clients in (8, 32):
                        rows.append(("healthz (HTTP+TLS baseline)", clients,
                                     load(server, http_requests("/healthz", []), clients, args.warmup, args.duration)))
                if cache_size or verified:  # fill the caches once, then measure
                    load(server, http_requests("/validate", bodies), 8, 0.0, 2.0)
                for clients in (8, 32):
                    rows.append((label, clients,
                                 load(server, http_requests("/validate", bodies), clients, args.warmup,
                                      args.duration)))
            finally:
                server.stop()

        print(f"\nmlseal webhook benchmark: {args.entries:,}-entry SQLite ledger, {len(chosen)} distinct models "
              f"(10% fail a gate), {os.cpu_count()} CPUs, server + client on this machine\n")
        print(f"baseline: sha256 {sha_mbs:,.0f} MB/s; engine in-process (no HTTP, uncached) "
              f"{engine_ms:.2f} ms/decision\n")
        base = {c: r["rate"] for name, c, r in rows if name.startswith("healthz")}
        print(f"| {'scenario':32} | clients | req/s  | p50 ms | p99 ms | vs healthz req/s | denied |")
        print(f"|{'-' * 34}|---------|--------|--------|--------|------------------|--------|")
        for name, c, r in rows:
            print(f"| {name:32} | {c:7d} | {r['rate']:6.0f} | {r['p50']:6.2f} | {r['p99']:6.2f} | "
                  f"{r['rate'] / base[c]:16.2f} | {r['denied']:6d} |")
        warm8 = next(r for name, c, r in rows if name.startswith("validate warm") and c == 8)
        ok_p99, ok_rate = warm8["p99"] <= 50, warm8["rate"] >= 500
        print(f"\ntarget p99 <= 50 ms warm at 8 clients: {warm8['p99']:.2f} ms {'PASS' if ok_p99 else 'FAIL'}")
        print(f"target >= 500 decisions/s warm at 8 clients: {warm8['rate']:.0f}/s {'PASS' if ok_rate else 'FAIL'}")
        return 0 if ok_p99 and ok_rate else 1
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


def isvc_for(sha256: str, uri: str) -> dict[str, Any]:
    from tests.fixtures_admission import Model

    return isvc(Model(sha256, uri))


if __name__ == "__main__":
    sys.exit(main())
