"""Pipeline benchmarks: sealing overhead per stage, sealed vs plain KFP pipeline, demo wall time.

    python benchmarks/pipeline.py            # full run (about 2-3 minutes on 2 cores)
    python benchmarks/pipeline.py --quick    # fewer repetitions

Targets (issue 6): sealing overhead per stage, hashing excluded, <= 50 ms; the reference
pipeline sealed vs the same steps as plain KFP components, in the same run, <= 1.15x
wall time; `mlseal demo` under 2 minutes. Baselines are measured in the same run:
`hashlib.sha256` throughput (to take hashing out) and the plain pipeline.
"""

# (no `from __future__ import annotations`: KFP reads the plain components' real annotations)

import argparse
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

# --- plain components: the same steps, same library code, no sealing ---------------------

_plain = dsl.component(base_image="python:3.11", install_kfp_package=False)


@_plain
def p_ingest(source: str, dataset: Output[Dataset]) -> None:
    from mlseal.ml import data

    table, _ = data.read_source(source)
    data.write_csv(table, dataset.path)


@_plain
def p_anonymize(data: Input[Dataset], anonymized: Output[Dataset]) -> None:
    from mlseal.ml import anonymize
    from mlseal.ml import data as d

    table, _ = anonymize.anonymize(d.read_csv(data.path), b"k" * 32, anonymize.AnonymizeSpec.demo())
    d.write_csv(table, anonymized.path)


@_plain
def p_encrypt(data: Input[Dataset], encrypted: Output[Dataset]) -> None:
    from mlseal.ml import crypto

    with open(data.path, "rb") as f, open(encrypted.path, "wb") as out:
        out.write(crypto.encrypt(f.read(), b"d" * 32, "plain:v1:none"))


@_plain
def p_validate(data: Input[Dataset], reference_path: str, report: Output[Artifact]) -> None:
    from mlseal.ml import crypto, validate
    from mlseal.ml import data as d

    with open(data.path, "rb") as f:
        table = d.from_csv_bytes(crypto.decrypt(f.read(), b"d" * 32))
    with open(reference_path, "rb") as f:
        ref = validate.Reference.from_json(f.read())
    with open(report.path, "w") as out:
        out.write(validate.validate(table, ref).to_json())


@_plain
def p_train(data: Input[Dataset], validation: Input[Artifact], model: Output[Model], epochs: int = 60) -> None:
    from mlseal.ml import crypto, train
    from mlseal.ml import data as d

    with open(data.path, "rb") as f:
        table = d.from_csv_bytes(crypto.decrypt(f.read(), b"d" * 32))
    part, _ = d.split(table, seed=0)
    fitted, _ = train.train(part, train.TrainConfig(epochs=epochs))
    with open(model.path, "wb") as out:
        out.write(fitted.to_json())


@_plain
def p_evaluate(model: Input[Model], data: Input[Dataset], metrics: Output[Metrics]) -> None:
    from mlseal.ml import crypto, evaluate
    from mlseal.ml import data as d
    from mlseal.ml.model import LinearModel

    with open(data.path, "rb") as f:
        table = d.from_csv_bytes(crypto.decrypt(f.read(), b"d" * 32))
    with open(model.path, "rb") as f:
        fitted = LinearModel.from_json(f.read())
    tr, te = d.split(table, seed=0)
    scores = evaluate.evaluate(fitted, te, train=tr)
    evaluate.check_gates(scores, {"accuracy": {"min": 0.9}, "robust_accuracy": {"min": 0.7}})
    with open(metrics.path, "w") as out:
        out.write(scores.to_json())


@_plain
def p_deploy(model: Input[Model], evaluation: Input[Metrics], manifest: Output[Artifact]) -> None:
    import hashlib

    import yaml

    with open(model.path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "plain", "annotations": {"mlseal.dev/model-sha256": sha}},
           "spec": {"predictor": {"model": {"modelFormat": {"name": "mlseal-linear"}, "storageUri": model.uri}}}}
    with open(manifest.path, "w") as out:
        out.write(yaml.safe_dump(doc))


@dsl.pipeline(name="plain-reference")
def plain(source: str, reference_path: str, epochs: int = 60) -> None:
    raw = p_ingest(source=source)
    anon = p_anonymize(data=raw.outputs["dataset"])
    enc = p_encrypt(data=anon.outputs["anonymized"])
    val = p_validate(data=enc.outputs["encrypted"], reference_path=reference_path)
    mod = p_train(data=enc.outputs["encrypted"], validation=val.outputs["report"], epochs=epochs)
    ev = p_evaluate(model=mod.outputs["model"], data=enc.outputs["encrypted"])
    p_deploy(model=mod.outputs["model"], evaluation=ev.outputs["metrics"])


# --- measurements ---------------------------------------------------------------------------


def sha256_rate(size: int = 64 << 20) -> float:
    """hashlib.sha256 throughput in bytes/s (the hashing baseline)."""
    buf = os.urandom(size)
    t = time.perf_counter()
    hashlib.sha256(buf).digest()
    return size / (time.perf_counter() - t)


@contextlib.contextmanager
def timed_hashing() -> Iterator[list[float]]:
    """Accumulate the time mlseal spends hashing file bytes (its two hashing loops)."""
    from mlseal.signing import digest

    spent = [0.0]
    originals = {name: getattr(digest, name) for name in ("_hash_mmap", "_hash_read")}

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: object, **kwargs: object) -> None:
            t = time.perf_counter()
            try:
                fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t

        return timed

    for name, fn in originals.items():
        setattr(digest, name, wrap(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(digest, name, fn)


def stage_overhead(root: Path, size: int, reps: int) -> tuple[float, float, float]:
    """Per-stage cost of sealing one input and one output of `size` bytes.

    Returns medians, in seconds, of: the time of a sealed stage minus the time of its
    body (reading the input, writing the output, timed inside the stage) minus the time
    the stage spent hashing file bytes (measured inside mlseal's hashing loops); that
    hashing time; and the body time.
    """
    from mlseal.demo import Workdir, _prepare
    from mlseal.ledger import open_ledger
    from mlseal.signing.trust import load_trust
    from mlseal.stage import Sealing, Stage

    wd = Workdir(root)
    src, signer = _prepare(wd, {}, lambda _: None, {"accuracy": 0.9})
    payload = os.urandom(size)
    overhead, hashing, bodies = [], [], []
    with open_ledger(wd.ledger_url) as led:
        sealing = Sealing(ledger=led, signer=signer, trust=load_trust(wd.trust), secrets=src)
        first = root / "bench" / "in-0.bin"
        with Stage("ingest", name="bench", sealing=sealing) as st:
            st.output("x", first).write_bytes(payload)
        prev = first
        for i in range(reps + 2):
            nxt = root / "bench" / f"in-{i + 1}.bin"
            t0 = time.perf_counter()
            with timed_hashing() as spent, Stage("process", name="bench", sealing=sealing) as st:
                verified = st.input("x", prev)
                out = st.output("y", nxt)
                b0 = time.perf_counter()
                out.write_bytes(verified.read_bytes()[::-1])
                b1 = time.perf_counter()
            t1 = time.perf_counter()
            prev.unlink()
            prev = nxt
            if i >= 2:  # warm-up
                bodies.append(b1 - b0)
                hashing.append(spent[0])
                overhead.append((t1 - t0) - (b1 - b0) - spent[0])
    return statistics.median(overhead), statistics.median(hashing), statistics.median(bodies)


def from_env_cost(root: Path, reps: int) -> list[float]:
    """Opening the ledger, loading trust and key from the environment (once per KFP task)."""
    from mlseal.demo import Workdir, _task_env
    from mlseal.stage import Sealing

    wd = Workdir(root)
    env = {**os.environ, **_task_env(wd, type("S", (), {"kind": "dev"})())}
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        s = Sealing.from_env(env)
        s.ledger.close()  # type: ignore[attr-defined]
        out.append(time.perf_counter() - t)
    return out


def pipeline_walls(root: Path, reps: int, epochs: int) -> tuple[list[float], list[float]]:
    """Wall time of the sealed reference pipeline and the plain one, interleaved, via kfp.local.

    Python bytecode is cached for the tasks (in a temporary PYTHONPYCACHEPREFIX), as in
    the component image, where pip byte-compiles every installed module; otherwise, with
    PYTHONDONTWRITEBYTECODE set, every task would recompile mlseal's sources. One
    untimed run of each warms that cache.
    """
    from mlseal.demo import Workdir, _environ, _prepare, _task_env
    from mlseal.pipelines import reference

    wd = Workdir(root)
    src, _ = _prepare(wd, {}, lambda _: None, {"accuracy": 0.9})
    sealed_t, plain_t = [], []
    devnull = open(os.devnull, "w")  # noqa: SIM115
    cache = {"PYTHONPYCACHEPREFIX": str(root / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
    with _environ({**_task_env(wd, src), **cache}):
        for i in range(-1, reps):
            for kind in (("sealed", "plain") if i % 2 == 0 else ("plain", "sealed")):
                local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / f"{kind}-{i}"))
                t = time.perf_counter()
                with contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
                    if kind == "sealed":
                        reference(source=str(wd.source), reference_path=str(wd.reference),
                                  policy_path=str(wd.policy), epochs=epochs)
                    else:
                        plain(source=str(wd.source), reference_path=str(wd.reference), epochs=epochs)
                if i >= 0:  # the first round warms the bytecode cache
                    (sealed_t if kind == "sealed" else plain_t).append(time.perf_counter() - t)
    return sealed_t, plain_t


def demo_wall(root: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlseal.cli", "demo", "--workdir", str(root / "demo")],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    reps = 10 if args.quick else 30
    prs = 1 if args.quick else 3
    import logging

    logging.disable(logging.WARNING)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mlseal-bench-") as tmp:
        root = Path(tmp)
        rate = sha256_rate()
        rows.append(("hashlib.sha256 (baseline)", f"{rate / 1e6:8.0f} MB/s", "", ""))
        for size, label in ((1 << 10, "1 KiB"), (32 << 20, "32 MiB")):
            over, hashing, plain_body = stage_overhead(root / f"stage-{size}", size, reps)
            rows.append((f"sealing overhead / stage, {label} artifact (hashing excluded)", f"p50 {ms(over)}",
                         f"hashing {ms(hashing)}", "PASS" if over <= 0.050 else "FAIL (target <= 50 ms)"))
            rows.append((f"  the step's own work ({label}: read input, write output)", f"p50 {ms(plain_body)}", "", ""))
        env_cost = from_env_cost(root / "stage-1024", reps)
        rows.append(("task setup: Sealing.from_env (ledger, trust, key)", f"p50 {ms(statistics.median(env_cost))}",
                     f"max {ms(max(env_cost))}", ""))
        sealed_t, plain_t = pipeline_walls(root / "pipes", prs, 60)
        s_med, p_med = statistics.median(sealed_t), statistics.median(plain_t)
        ratio = s_med / p_med
        rows.append(("reference pipeline, plain KFP components (baseline)", f"{p_med:8.2f} s",
                     " ".join(f"{x:.2f}" for x in plain_t), ""))
        rows.append(("reference pipeline, sealed", f"{s_med:8.2f} s", " ".join(f"{x:.2f}" for x in sealed_t),
                     f"{ratio:.2f}x " + ("PASS" if ratio <= 1.15 else "FAIL (target <= 1.15x)")))
        wall = demo_wall(root)
        rows.append(("mlseal demo (process start to summary)", f"{wall:8.2f} s", "",
                     "PASS" if wall < 120 else "FAIL (target < 120 s)"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>16}  {'detail':<18}  verdict")
    for name, value, detail, verdict in rows:
        print(f"{name:<{width}}  {value:>16}  {detail:<18}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
