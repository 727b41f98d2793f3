"""`mlseal fetch` against a plain download of the same bytes from the same S3 server, same run.

    python benchmarks/fetch.py                       # 256 MiB model + 2,000-file model
    python benchmarks/fetch.py --big-mib 64 --files 500 --repeat 3   # quicker

Starts a moto S3 server (ThreadedMotoServer, as the tests do) on a random port,
records two models in a fresh SQLite ledger through a signed lineage (ingest -> process
-> train -> evaluate, OMS bundle beside each model) and uploads them:

1. ``big``: a directory with one ``--big-mib`` file of random bytes (a Triton ONNX
   repository: ``1/model.onnx`` + ``config.pbtxt``);
2. ``many``: a directory of ``--files`` files of ``--file-kib`` random bytes each.

Baseline: s3fs ``fs.get(uri, dir, recursive=True)`` — a plain, concurrent fsspec
download, no verification. A second reference, ``stream``, reads each file as one
streamed GET (fsspec ``open_async``, 16 MiB reads) and writes it, file after file, with
no verification: the I/O path `mlseal fetch` takes for large files, so "fetch vs stream"
on the large model is the cost of verification alone. Candidate: `mlseal.fetch.fetch_model` (what `mlseal fetch`
runs, in-process so interpreter start-up is not counted): admission decision on the
ledger, bundle download and signature check, listing check, hashing while
downloading, digest check, publish. Both get a fresh s3fs instance and an empty
destination each run; runs are interleaved (baseline, candidate, baseline, ...) and
the median of --repeat is reported with the ratio. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIB = 1 << 20


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def record(led: Any, key: Any, tag: str, model: Path, uri: str) -> str:
    from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex
    from mlseal.signing.artifact import sign_path
    from mlseal.signing.digest import digest_path

    def h(s: str) -> Sha256Hex:
        return Sha256Hex(hashlib.sha256(f"{tag}/{s}".encode()).hexdigest())

    raw = OutputRef(name="raw", uri=f"s3://data/{tag}/raw.csv", sha256=h("raw"))
    s0 = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="pipeline").seq
    clean = OutputRef(name="clean", uri=f"s3://data/{tag}/clean.csv", sha256=h("clean"))
    s1 = led.append(RecordDraft(stage="process", component=Component(name="anonymize"),
                                inputs=(InputRef(name="raw", uri=raw.uri, sha256=raw.sha256, producer_seq=s0),),
                                outputs=(clean,)), key, signer_name="pipeline").seq
    bundle = sign_path(model, key)
    sha = Sha256Hex(digest_path(model))
    out = OutputRef(name="model", uri=uri, sha256=sha,
                    bundle_sha256=Sha256Hex(hashlib.sha256(bundle.read_bytes()).hexdigest()))
    s2 = led.append(RecordDraft(stage="train", inputs=(InputRef(name="data", uri=clean.uri, sha256=clean.sha256,
                                                                 producer_seq=s1),), outputs=(out,)),
                    key, signer_name="pipeline").seq
    led.append(RecordDraft(stage="evaluate", inputs=(InputRef(name="model", uri=uri, sha256=sha, producer_seq=s2),),
                           metrics={"accuracy": 0.95}), key, signer_name="pipeline")
    return sha


def upload(client: Any, local: Path, bucket: str, key: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = [p for p in sorted(local.rglob("*")) if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: client.upload_file(str(p), bucket, f"{key}/{p.relative_to(local).as_posix()}"),
                      files))
    client.upload_file(str(local.with_name(local.name + ".sig")), bucket, key + ".sig")


def plain_stream(fs: Any, path: str, dest: Path) -> None:
    """Every file under `path` read as one streamed request and written, no hashing, no checks."""
    from fsspec.asyn import sync

    async def copy(rpath: str, lpath: Path) -> None:
        f = await fs.open_async(rpath, "rb")
        lpath.parent.mkdir(parents=True, exist_ok=True)
        with open(lpath, "wb") as out:
            while chunk := await f.read(16 * MIB):
                out.write(chunk)

    for rpath in fs.find(path):
        sync(fs.loop, copy, rpath, dest / rpath[len(path) + 1:])


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    c0 = time.process_time()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kib", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tmp", default=None, help="scratch directory (default: the system temp dir)")
    args = ap.parse_args(argv)

    import boto3
    import fsspec
    import yaml

    from mlseal.admission import load_policy
    from mlseal.fetch import fetch_model
    from mlseal.ledger import open_ledger
    from mlseal.ledger.record import RecordDraft
    from mlseal.signing.keys import LocalKeySigner

    work = Path(tempfile.mkdtemp(prefix="mlseal-bench-fetch-", dir=args.tmp))
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        with moto_s3() as endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="models")
            key = LocalKeySigner.generate()
            key.save(work / "k.pem", work / "k.pub.pem")
            (work / "trust.yaml").write_text("signers: [{name: pipeline, public_key: k.pub.pem}]\n")
            ledger = "sqlite:///" + str(work / "ledger.db")
            (work / "policy.yaml").write_text(yaml.safe_dump({
                "trust": "trust.yaml", "ledger": ledger, "gates": {"accuracy": {"min": 0.9}},
                "require_stages": ["ingest", "anonymize", "train", "evaluate"]}))
            big = work / "src" / "big" / "model"
            (big / "1").mkdir(parents=True)
            with open(big / "1" / "model.onnx", "wb") as f:
                for _ in range(args.big_mib):
                    f.write(os.urandom(MIB))
            (big / "config.pbtxt").write_text('name: "big"\nplatform: "onnxruntime_onnx"\n')
            many = work / "src" / "many" / "model"
            for i in range(args.files):
                p = many / f"shard-{i // 100:03d}" / f"part-{i:05d}.bin"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(os.urandom(args.file_kib * 1024))
            cases = {}
            with open_ledger(ledger) as led:
                for tag, local in (("big", big), ("many", many)):
                    uri = f"s3://models/{tag}/model"
                    cases[tag] = (uri, record(led, key, tag, local, uri), local)
                led.append(RecordDraft(stage="ingest"), key, signer_name="pipeline")  # every record has a successor
            for uri, _, local in cases.values():
                upload(client, local, "models", uri.removeprefix("s3://models/"))
            shutil.rmtree(work / "src")  # the bytes live in S3 only from here on
            policy = load_policy(work / "policy.yaml")

            rows = []
            for tag, (uri, sha, _) in cases.items():
                total = 0
                base_t: list[float] = []
                cand_t: list[float] = []
                base_c: list[float] = []
                cand_c: list[float] = []
                str_t: list[float] = []
                str_c: list[float] = []
                for i in range(args.repeat + 1):  # the first round warms both up and is not counted
                    d1 = work / f"plain-{tag}-{i}"
                    d2 = work / f"fetch-{tag}-{i}" / "models"
                    d2.mkdir(parents=True)

                    def plain(d: Path = d1, u: str = uri) -> None:
                        fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False,
                                               client_kwargs={"endpoint_url": endpoint})
                        fs.get(u.removeprefix("s3://") + "/", str(d) + "/", recursive=True)

                    d3 = work / f"stream-{tag}-{i}"

                    def stream(d: Path = d3, u: str = uri) -> None:
                        fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False,
                                               client_kwargs={"endpoint_url": endpoint})
                        plain_stream(fs, u.removeprefix("s3://"), d)

                    def verified(d: Path = d2, u: str = uri, s: str = sha) -> None:
                        fetch_model(u, d, sha256=s, policy=policy)

                    order = [(plain, base_t, base_c), (verified, cand_t, cand_c), (stream, str_t, str_c)]
                    if i % 2:
                        order.reverse()
                    for fn, ts, cs in order:
                        t, c = timed(fn)
                        if i:
                            ts.append(t)
                            cs.append(c)
                    got = sum(p.stat().st_size for p in d2.rglob("*") if p.is_file())
                    plain_got = sum(p.stat().st_size for p in d1.rglob("*") if p.is_file())
                    # the plain download also fetched the bundle? no: SRC is the model directory only
                    assert got == plain_got, (got, plain_got)
                    total = got
                    shutil.rmtree(d1)
                    shutil.rmtree(d2.parent)
                    shutil.rmtree(d3)
                b, c = statistics.median(base_t), statistics.median(cand_t)
                st = statistics.median(str_t)
                rows.append((tag, total, b, statistics.median(base_c), c, statistics.median(cand_c), c / b, st, c / st))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("$ python " + " ".join(["benchmarks/fetch.py", *(sys.argv[1:] if argv is None else argv)]))
    print(f"mlseal fetch vs plain s3fs download, moto S3 on 127.0.0.1, median of {args.repeat} "
          f"(interleaved), {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'model':<22} {'bytes':>12} {'plain s':>9} {'plain cpu':>10} {'fetch s':>9} {'fetch cpu':>10} "
          f"{'ratio':>7} {'target':>7} {'stream s':>9} {'vs stream':>10}")
    for tag, total, b, bc, c, cc, r, st, rs in rows:
        name = f"{tag} ({args.big_mib} MiB)" if tag == "big" else f"{tag} ({args.files} x {args.file_kib} KiB)"
        print(f"{name:<22} {total:>12,} {b:>9.3f} {bc:>10.3f} {c:>9.3f} {cc:>10.3f} {r:>7.3f} {'<=1.10':>7} "
              f"{st:>9.3f} {rs:>10.3f}")
    print("plain: s3fs fs.get(recursive=True). stream: each file read as one streamed GET (fsspec open_async, "
          "16 MiB reads) and written, one file after another, no verification: fetch's I/O path for large files")
    return 0 if all(r[-1] <= 1.10 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
