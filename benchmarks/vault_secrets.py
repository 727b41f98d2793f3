"""Secrets latency: KV v2 read and Transit sign through hvac, mlseal's wrapper vs bare hvac.

    python benchmarks/vault_secrets.py                # 400 requests per series
    python benchmarks/vault_secrets.py -n 1000        # steadier percentiles
    VAULT_ADDR=... VAULT_TOKEN=... python benchmarks/vault_secrets.py --real   # against a real Vault

Runs the Vault-API-compatible test server (tests/vault_server.py) on 127.0.0.1 over
HTTP, or a real Vault with ``--real``. Baseline: bare `hvac` calls (one keep-alive
session) doing the same request; candidate: `mlseal.secrets` (token freshness check,
retry wrapper, response validation, and for signing the local check of each signature
against the public key). Series are interleaved in small batches so background load
hits both alike. Reports p50/p99 per series and the candidate/baseline ratio of p50
(target <= 1.2x, issue 3).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hvac

from mlseal.secrets._vault import VaultSecretSource
from mlseal.secrets._vault_config import VaultConfig

# The Vault test server lives in tests/: put the repository root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def interleave(series: dict[str, Callable[[], object]], n: int, batch: int = 5) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in series}
    for fn in series.values():  # warm up connections and caches
        for _ in range(10):
            fn()
    done = 0
    while done < n:
        for name, fn in series.items():
            for _ in range(min(batch, n - done)):
                t = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t)
        done += batch
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=400, help="requests per series")
    ap.add_argument("--real", action="store_true", help="use VAULT_ADDR/VAULT_TOKEN instead of the test server")
    args = ap.parse_args()

    server = None
    if args.real:
        addr, token = os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"]
        cacert = os.environ.get("VAULT_CACERT")
        where = f"real Vault at {addr}"
    else:
        from tests.vault_server import FakeVault

        server = FakeVault().start()
        addr, token, cacert = server.addr, server.root_token, None
        where = "test server (tests/vault_server.py) on 127.0.0.1, HTTP keep-alive"
    admin = hvac.Client(url=addr, token=token, verify=cacert or True)
    for kind, path, opts in (("kv", "secret", {"version": "2"}), ("transit", "transit", None)):
        with contextlib.suppress(hvac.exceptions.InvalidRequest):
            admin.sys.enable_secrets_engine(backend_type=kind, path=path, options=opts)
    admin.secrets.transit.create_key(name="mlseal-bench-signing", key_type="ecdsa-p256")
    admin.secrets.kv.v2.create_or_update_secret(path="mlseal/bench/db", secret={"password": "bench-only"})

    env = {"VAULT_ADDR": addr, "VAULT_TOKEN": token, **({"VAULT_CACERT": cacert} if cacert else {})}
    src = VaultSecretSource(VaultConfig.from_env(env))
    signer = src.transit_signer("mlseal-bench-signing")
    unchecked = src.transit_signer("mlseal-bench-signing", check_signatures=False)
    bare = hvac.Client(url=addr, token=token, verify=cacert or True)
    payload = os.urandom(256)
    b64 = base64.b64encode(payload).decode()

    def bare_read() -> object:
        return bare.secrets.kv.v2.read_secret_version(path="mlseal/bench/db", mount_point="secret",
                                                      raise_on_deleted_version=True)["data"]["data"]["password"]

    def bare_sign() -> object:
        sig = bare.secrets.transit.sign_data(name="mlseal-bench-signing", hash_input=b64, hash_algorithm="sha2-256",
                                             marshaling_algorithm="asn1")["data"]["signature"]
        return base64.b64decode(sig.split(":")[2])

    t0 = time.perf_counter()
    samples = interleave({
        "kv read / bare hvac": bare_read,
        "kv read / mlseal": lambda: src.read("mlseal/bench/db"),
        "transit sign / bare hvac": bare_sign,
        "transit sign / mlseal": lambda: signer.sign(payload),
        "transit sign / mlseal -check": lambda: unchecked.sign(payload),
    }, args.n)
    elapsed = time.perf_counter() - t0
    if server is not None:
        server.stop()

    print(f"# secrets latency: {where}; n={args.n} per series, interleaved; {elapsed:.1f}s total")
    print(f"{'operation':<14} {'client':<15} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 vs bare':>12}")
    ok = True
    for op in ("kv read", "transit sign"):
        base = samples[f"{op} / bare hvac"]
        for key in [k for k in samples if k.startswith(op + " / ")]:
            client = key.split(" / ", 1)[1]
            s = samples[key]
            ratio = percentile(s, 0.5) / percentile(base, 0.5)
            if client == "mlseal":
                ok &= ratio <= 1.2
            print(f"{op:<14} {client:<15} {percentile(s, 0.5) * 1e3:>8.3f} {percentile(s, 0.99) * 1e3:>8.3f} "
                  f"{statistics.fmean(s) * 1e3:>8.3f} {ratio:>11.2f}x")
    print("# 'mlseal' signing verifies each returned signature locally (~0.2 ms of P-256 verify);"
          " '-check' is check_signatures=False, the wrapper alone")
    print(f"# target: mlseal p50 <= 1.2x bare hvac -> {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
