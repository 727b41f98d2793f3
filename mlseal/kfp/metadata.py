"""The KFP artifact metadata keys mlseal sets on every sealed output.

All of it is public (digests and signatures): a downstream task on a cluster downloads
only the artifact's bytes, so the digest the producer recorded, its ledger seq and its
OMS bundle travel in the artifact's metadata, through KFP's metadata store.
"""

from __future__ import annotations

__all__ = ["META_BUNDLE", "META_SEQ", "META_SHA256"]

#: the artifact's digest (`digest_path`: sha256 of a file, manifest digest of a directory)
META_SHA256 = "mlseal.sha256"
#: the ledger seq of the record that produced it
META_SEQ = "mlseal.seq"
#: the OMS bundle (Sigstore bundle v0.3 JSON) signed over it
META_BUNDLE = "mlseal.bundle"
