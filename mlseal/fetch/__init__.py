"""The verifying model loader behind `mlseal fetch`.

It runs where a model server's files come from — a KServe storage initializer
(ClusterStorageContainer) or a plain Deployment's init container — downloads the model
from its storage URI through fsspec, verifies it against the ledger, its OMS bundle and
the admission policy while it streams, and publishes it into the model volume only
after everything verified (`mlseal.fetch.loader` has the order of the checks).

    >>> from mlseal.fetch import expected_digest
    >>> expected_digest("sha256:" + "ab" * 32) == "ab" * 32
    True
"""

from __future__ import annotations

from mlseal.fetch.loader import (
    PLACEMENT_ENV,
    SERVE_STAGE,
    FetchDenied,
    FetchResult,
    Placement,
    check_dest,
    expected_digest,
    fetch_model,
    guard_logs,
    record_signer,
    scrub,
)
from mlseal.fetch.storage import DownloadError, parse_source

__all__ = [
    "PLACEMENT_ENV",
    "SERVE_STAGE",
    "DownloadError",
    "FetchDenied",
    "FetchResult",
    "Placement",
    "check_dest",
    "expected_digest",
    "fetch_model",
    "guard_logs",
    "parse_source",
    "record_signer",
    "scrub",
]
