"""The KFP artifact metadata keys mlseal sets on every sealed output.

All of it is public (digests and signatures): a downstream task on a cluster downloads
only the artifact's bytes, so the digest the producer recorded, its ledger seq and its
OMS bundle travel in the artifact's metadata, through KFP's metadata store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["META_BUNDLE", "META_CHECKPOINT", "META_ENTRY_SHA256", "META_SEQ", "META_SHA256", "upstream"]

#: the artifact's digest (`digest_path`: sha256 of a file, manifest digest of a directory)
META_SHA256 = "mlseal.sha256"
#: the ledger seq of the record that produced it
META_SEQ = "mlseal.seq"
#: the OMS bundle (Sigstore bundle v0.3 JSON) signed over it
META_BUNDLE = "mlseal.bundle"
#: the SHA-256 of that record's ledger entry: a downstream task requires the entry at that
#: seq to still be exactly this one (a ledger rolled back or forked between tasks is refused)
META_ENTRY_SHA256 = "mlseal.entry_sha256"
#: the signed checkpoint (C2SP note text) the producing task accepted; a downstream task
#: requires the ledger to extend it
META_CHECKPOINT = "mlseal.checkpoint"


def upstream(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """`Stage.input` keyword arguments for what the producer put in an artifact's metadata
    about its record (seq, entry hash) and the checkpoint it accepted; absent keys are None.
    A value of the wrong type is passed as None for seq/entry and refused for the checkpoint
    (it cannot verify)."""
    meta = meta or {}
    seq = meta.get(META_SEQ)
    entry = meta.get(META_ENTRY_SHA256)
    cp = meta.get(META_CHECKPOINT)
    return {
        "producer_seq": int(seq) if isinstance(seq, int | float) and not isinstance(seq, bool) else None,
        "producer_entry_sha256": entry if isinstance(entry, str) and entry else None,
        "checkpoint": cp.encode() if isinstance(cp, str) and cp else (b"" if cp else None),
    }
