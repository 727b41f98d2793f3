"""The OpenSSF Model Signing (OMS) v1.0 payload: an in-toto Statement v1 over a manifest.

The statement names the model once as its subject (digest: sha256 over the per-file
digests, see `mlseal.signing.digest`) and lists every file in the predicate:

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "model", "digest": {"sha256": "<subject digest>"}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"resources": [{"algorithm": "sha256", "digest": "<hex>", "name": "a.txt"}, ...],
                   "serialization": {"allow_symlinks": false, "ignore_paths": [...],
                                     "method": "files", "hash_type": "sha256"}}}

The bytes are laid out as `model-signing` 1.1.1 writes them (protobuf JSON, two-space
indent), so that the same manifest gives the same payload whichever tool signed it.
Parsing is pure and strict: every deviation is a `VerificationError` saying what was
found.

    >>> from mlseal.signing.digest import Manifest, Resource
    >>> m = Manifest("model", (Resource("w.bin", "ab" * 32),), (".git",), False)
    >>> parse_statement(statement_bytes(m)).resources == m.resources
    True
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlseal.errors import VerificationError
from mlseal.signing.digest import Manifest, Resource, subject_digest

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_V01",
    "STATEMENT_TYPE",
    "parse_statement",
    "resource_algorithm",
    "statement_bytes",
    "statement_obj",
]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: the pre-1.0 predicate `model-signing` still reads; mlseal refuses it (it signs no file list)
PREDICATE_TYPE_V01 = "https://model_signing/Digests/v0.1"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(r".+:[0-9]+:[0-9]+")


def resource_algorithm(m: Manifest) -> str:
    return "sha256" if m.shard_size is None else f"sha256-sharded-{m.shard_size}"


def statement_obj(m: Manifest) -> dict[str, Any]:
    serialization: dict[str, Any] = {"allow_symlinks": m.allow_symlinks}
    if m.ignore_paths:
        serialization["ignore_paths"] = list(m.ignore_paths)
    if m.shard_size is None:
        serialization.update({"method": "files", "hash_type": "sha256"})
    else:
        serialization.update({"method": "shards", "hash_type": "sha256", "shard_size": m.shard_size})
    algorithm = resource_algorithm(m)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": m.name, "digest": {"sha256": m.subject_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"algorithm": algorithm, "digest": r.sha256, "name": r.name} for r in m.resources],
            "serialization": serialization,
        },
    }


def statement_bytes(m: Manifest) -> bytes:
    """The DSSE payload for a manifest, laid out as `model-signing` writes it."""
    return json.dumps(statement_obj(m), indent=2, ensure_ascii=False).encode("utf-8")


def _get(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise VerificationError(f"OMS statement: {where}{key} must be a {kind.__name__}, got {value!r:.60}")
    return value


def parse_statement(payload: bytes) -> Manifest:
    """Check an OMS v1.0 statement and return the manifest it signs.

    Checklist: (1) JSON object; (2) in-toto Statement v1; (3) the model-signing v1.0
    predicate; (4) exactly one subject with a sha256 digest; (5) "files" serialization
    with sha256; (6) well-formed, unique resources; (7) the subject digest is the hash of
    the resources' digests, so the subject and the file list cannot disagree.
    """
    # (1)
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise VerificationError("OMS statement is not valid JSON") from None
    if not isinstance(obj, dict):
        raise VerificationError("OMS statement is not a JSON object")
    # (2)
    if obj.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"statement type is {obj.get('_type')!r}, expected {STATEMENT_TYPE!r}")
    # (3)
    ptype = obj.get("predicateType")
    if ptype != PREDICATE_TYPE:
        hint = " (the pre-1.0 model-signing format, not accepted)" if ptype == PREDICATE_TYPE_V01 else ""
        raise VerificationError(f"predicate type is {ptype!r}{hint}, expected {PREDICATE_TYPE!r}")
    # (4)
    subjects = _get(obj, "subject", list, "")
    if len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise VerificationError(f"OMS statement must have exactly one subject, found {len(subjects)}")
    subject = subjects[0]
    name = _get(subject, "name", str, "subject.")
    sdigest = _get(_get(subject, "digest", dict, "subject."), "sha256", str, "subject.digest.")
    # (5)
    predicate = _get(obj, "predicate", dict, "")
    ser = _get(predicate, "serialization", dict, "predicate.")
    if ser.get("method") not in ("files", "shards") or ser.get("hash_type") != "sha256":
        raise VerificationError(
            f"unsupported serialization method={ser.get('method')!r} hash_type={ser.get('hash_type')!r};"
            " mlseal verifies methods 'files' and 'shards' with sha256"
        )
    shard_size = None
    if ser["method"] == "shards":
        raw = ser.get("shard_size")
        # (model-signing writes it through a protobuf Struct, so 40 arrives as 40.0)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != int(raw) or raw <= 0:
            raise VerificationError(f"OMS statement: shard_size must be a positive integer, got {raw!r}")
        shard_size = int(raw)
    algorithm = "sha256" if shard_size is None else f"sha256-sharded-{shard_size}"
    allow_symlinks = ser.get("allow_symlinks", False)
    ignore = ser.get("ignore_paths", [])
    if not isinstance(allow_symlinks, bool) or not isinstance(ignore, list):
        raise VerificationError("OMS statement: malformed serialization parameters")
    if not all(isinstance(p, str) and p and not p.startswith("/") and ".." not in p.split("/") for p in ignore):
        raise VerificationError(f"OMS statement: ignore_paths must be relative paths inside the model: {ignore!r:.120}")
    # (6)
    resources = []
    seen: set[str] = set()
    for i, r in enumerate(_get(predicate, "resources", list, "predicate.")):
        if not isinstance(r, dict):
            raise VerificationError(f"OMS statement: resource {i} is not an object")
        rname = _get(r, "name", str, f"resources[{i}].")
        if r.get("algorithm") != algorithm:
            raise VerificationError(f"resource {rname!r}: algorithm {r.get('algorithm')!r}, expected {algorithm!r}")
        if shard_size is not None and not _SHARD_NAME.fullmatch(rname):
            raise VerificationError(f"resource {rname!r} is not named path:start:end")
        d = _get(r, "digest", str, f"resources[{i}].")
        if not _HEX64.fullmatch(d):
            raise VerificationError(f"resource {rname!r}: digest {d!r:.80} is not 64 lowercase hex digits")
        if rname in seen:
            raise VerificationError(f"resource {rname!r} is listed twice")
        seen.add(rname)
        resources.append(Resource(rname, d))
    # (7)
    computed = subject_digest(resources)
    if sdigest != computed:
        raise VerificationError(
            f"subject digest {sdigest[:16]}… does not match the listed resources ({computed[:16]}…)"
        )
    return Manifest(name, tuple(resources), tuple(ignore), allow_symlinks, shard_size)
