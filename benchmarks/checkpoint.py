"""Rollback/fork protection cost, each against a baseline measured in the same run.

    python benchmarks/checkpoint.py            # 100,000-entry ledger
    python benchmarks/checkpoint.py --quick    # 20,000 entries

Rows:

1. What a stage checks before appending (`checkpoint.accept`: the newest stored
   checkpoint's signature, a consistency proof from it, the last entry's inclusion)
   on an N-entry ledger, vs the same on a 1,000-entry ledger (O(log n): ratio near 1),
   and vs one append on the big ledger (what the check adds to a stage's record).
2. A witness run 100 entries after its last checkpoint (verifies those 100 entries and
   the consistency, signs and stores a checkpoint) vs the witness's first run over the
   whole N-entry ledger (a full verify).

The ledgers are signed pipeline records (~1.4 KB each, benchmarks/ledger.py), bulk-loaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger import CORES, ROWS, bulk_load_sqlite, draft, make_log, row

from mlseal.ledger import open_ledger
from mlseal.ledger.checkpoint import accept
from mlseal.ledger.witness import witness
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot


def _median_ms(f: Callable[[], object], reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--entries", type=int)
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    n = args.entries or (20_000 if args.quick else 100_000)
    signer, cp_key = LocalKeySigner.generate(), LocalKeySigner.generate()
    trust = TrustRoot.of(signer.verifier("bench"), checkpoint_keys=(cp_key.verifier("witness"),))
    print("command: python " + " ".join(sys.argv), file=sys.stderr)
    print(f"mlseal checkpoint benchmark on {CORES} cores (load avg {os.getloadavg()[0]:.1f}); "
          f"signing {n:,} records …", file=sys.stderr, flush=True)
    entries = make_log(n + 100, signer)
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="mlseal-bench-cp-") as d:
        tmp = Path(d)
        big_url = bulk_load_sqlite(tmp / "big.db", entries[:n])
        small_url = bulk_load_sqlite(tmp / "small.db", entries[:1000])
        # 2. the witness: first run over everything, then 100 entries later
        with open_ledger(big_url) as led:
            t = time.perf_counter()
            first = witness(led, trust, cp_key)
            full_s = time.perf_counter() - t
        # append 100 more signed records through the API (chain continues from the bulk load)
        with open_ledger(big_url) as led:
            for i in range(100):
                led.append(draft(n + i), signer, signer_name="bench")
            t = time.perf_counter()
            nxt = witness(led, trust, cp_key, state=first.note)
            incr_s = time.perf_counter() - t
        assert nxt.checked == 100 and nxt.stored
        row(f"witness, 100 entries after its checkpoint (ledger of {n + 100:,})", f"{incr_s * 1000:.1f} ms",
            f"first run, full verify of {n:,}: {full_s * 1000:,.0f} ms", f"{full_s / incr_s:,.0f}x faster", None)
        # 1. the stage check
        with open_ledger(small_url) as sl:
            witness(sl, trust, cp_key)
            small_ms = _median_ms(lambda: accept(sl, trust), 300)
        with open_ledger(big_url) as bl:
            big_ms = _median_ms(lambda: accept(bl, trust), 300)
            append_ms = _median_ms(lambda: bl.append(draft(0), signer, signer_name="bench"), 100)
        row(f"stage check before appending at {n + 100:,} entries", f"p50 {big_ms:.2f} ms",
            f"at 1,000 entries: p50 {small_ms:.2f} ms; one append: p50 {append_ms:.2f} ms",
            f"{big_ms / small_ms:.2f}x (O(log n): ~1x)", big_ms <= 2 * small_ms)
    header = ("what", "measured", "baseline (same run)", "ratio / target", "verdict")
    widths = [max(len(r[i]) for r in [*ROWS, header]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in ROWS:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
