"""URIs as they may be shown: never a credential or a query string in a message or log."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_uri"]


def redact_uri(uri: str) -> str:
    """Drop credentials and query strings a URI may carry, before it is logged or shown.

    >>> redact_uri("s3://AKIA:secret@bucket/model?X-Amz-Signature=abc")
    's3://bucket/model?<redacted>'
    >>> redact_uri("/mnt/models")
    '/mnt/models'
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
