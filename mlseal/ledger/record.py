"""Ledger records: the v1 schema, parsed once at the boundary, and its canonical bytes.

A record says what one pipeline step did: which artifacts it read (by digest, with the
ledger seq of the record that produced each), which it wrote (digest + OMS bundle
digest), its parameters, the secrets it used (Vault path + version, never values), its
metrics, and who signed it. Records are canonicalised with RFC 8785 (JCS) and signed
as a DSSE envelope of type `RECORD_PAYLOAD_TYPE`; that envelope is the ledger entry.

    >>> draft = RecordDraft(stage="ingest", outputs=(OutputRef(name="raw",
    ...     uri="file:///data/raw.csv", sha256=Sha256Hex("ab" * 32)),))
    >>> rec = draft.complete(seq=0, prev=ZERO_HASH, time="2026-01-01T00:00:00Z",
    ...     signer=SignerRef(name="pipeline", key_id="k"))
    >>> Record.from_obj(rec.to_obj()) == rec
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType, TypeVar

from mlseal.errors import VerificationError
from mlseal.ledger import _canonical, _jcs

__all__ = [
    "DEV_SECRET_STORE",
    "JSON",
    "RECORD_PAYLOAD_TYPE",
    "RECORD_VERSION",
    "UNRESOLVED_PLACEHOLDER",
    "ZERO_HASH",
    "Component",
    "InputRef",
    "NonCanonicalRecordError",
    "OutputRef",
    "Record",
    "RecordDraft",
    "RecordFormatError",
    "RunInfo",
    "SecretRef",
    "Sha256Hex",
    "SignerRef",
    "StageKind",
    "Status",
    "is_sha256_hex",
]

RECORD_PAYLOAD_TYPE = "application/vnd.mlseal.record.v1+json"
RECORD_VERSION = 1
ZERO_HASH = "0" * 64

Sha256Hex = NewType("Sha256Hex", str)
JSON = Any  # a value json.loads can return
T = TypeVar("T")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_STAGE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class StageKind(StrEnum):
    """The lifecycle stages mlseal knows; user stages may use other lowercase names."""

    INGEST = "ingest"
    PROCESS = "process"
    TRAIN = "train"
    EVALUATE = "evaluate"
    DEPLOY = "deploy"


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"


class RecordFormatError(VerificationError):
    """A record (or a field of one) does not follow the v1 schema."""


class NonCanonicalRecordError(RecordFormatError):
    """A record payload parses, but is not the RFC 8785 encoding of the record it holds."""


def _canonical_or_raise(record: Record) -> bytes:
    """``record.canonical()``, or `RecordFormatError` if RFC 8785 cannot encode a value
    it holds (e.g. a metric of 2**53 or more, read back as an integer)."""
    try:
        return record.canonical()
    except ValueError as exc:  # rfc8785.CanonicalizationError
        raise RecordFormatError(f"record {record.seq} ({record.stage}): {exc}") from None


def is_sha256_hex(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


# --- parsing helpers: each names the field path it rejects ----------------------------

def _obj(v: object, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise RecordFormatError(f"record field {where} must be an object, got {type(v).__name__}")
    return v


def _str(v: object, where: str, *, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise RecordFormatError(f"record field {where} must be a string, got {type(v).__name__}")
    return v


def _req_str(v: object, where: str) -> str:
    s = _str(v, where)
    assert s is not None
    return s


def _int(v: object, where: str, *, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise RecordFormatError(f"record field {where} must be a non-negative integer, got {v!r}")
    return v


def _sha(v: object, where: str, *, optional: bool = False) -> Sha256Hex | None:
    if v is None and optional:
        return None
    if not is_sha256_hex(v):
        shown = v[:80] if isinstance(v, str) else type(v).__name__
        raise RecordFormatError(f"record field {where} must be 64 lowercase hex digits, got {shown!r}")
    assert isinstance(v, str)
    return Sha256Hex(v)


def _list(v: object, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise RecordFormatError(f"record field {where} must be a list, got {type(v).__name__}")
    return v


def _items(o: dict[str, Any], key: str, parse: Callable[[object, str], T]) -> tuple[T, ...]:
    return tuple(parse(x, f"{key}[{i}]") for i, x in enumerate(_list(o.get(key, []), key)))


def _check_json(v: object, where: str) -> None:
    """Params must be plain JSON that RFC 8785 can canonicalise (no NaN, no big ints)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, int):
        if abs(v) >= 2**53:  # RFC 8785 / I-JSON: beyond this, numbers lose precision
            raise RecordFormatError(f"record field {where}: integer {v} is too large for JSON")
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise RecordFormatError(f"record field {where}: {v} is not a JSON number")
        if v.is_integer() and 2**53 <= abs(v) < 1e21:  # JSON would read it back as a too-large integer
            raise RecordFormatError(f"record field {where}: {v} is too large for JSON")
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_json(x, f"{where}[{i}]")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise RecordFormatError(f"record field {where}: key {k!r} is not a string")
            _check_json(x, f"{where}.{k}")
        return
    raise RecordFormatError(f"record field {where}: {type(v).__name__} is not a JSON value")


def _artifact(v: object, where: str) -> tuple[dict[str, Any], str, str, Sha256Hex]:
    """(object, name, uri, digest.sha256) of an input or output reference."""
    o = _obj(v, where)
    digest = _obj(o.get("digest"), f"{where}.digest")
    sha = _sha(digest.get("sha256"), f"{where}.digest.sha256")
    assert sha is not None
    return o, _req_str(o.get("name"), f"{where}.name"), _req_str(o.get("uri"), f"{where}.uri"), sha


# --- the schema ---------------------------------------------------------------------

#: the one secret store a record names: the dev store (``"dev"``) is never silent
DEV_SECRET_STORE = "dev"  # noqa: S105 (a store's name, not a password)


@dataclass(frozen=True)
class Component:
    """The code that ran: step name, source digest, image, and ``secret_store: dev``
    when its secrets came from the local dev store instead of Vault (absent otherwise)."""

    name: str = ""
    source_sha256: Sha256Hex | None = None
    image: str | None = None
    secret_store: str | None = None

    def to_obj(self) -> dict[str, JSON]:
        obj: dict[str, JSON] = {"name": self.name, "source_sha256": self.source_sha256, "image": self.image}
        if self.secret_store is not None:
            obj["secret_store"] = self.secret_store
        return obj

    @classmethod
    def from_obj(cls, v: object, where: str = "component") -> Component:
        o = _obj(v, where)
        store = _str(o.get("secret_store"), f"{where}.secret_store", optional=True)
        if store is not None and store != DEV_SECRET_STORE:
            raise RecordFormatError(f"record field {where}.secret_store must be {DEV_SECRET_STORE!r} or absent")
        return cls(
            name=_req_str(o.get("name", ""), f"{where}.name"),
            source_sha256=_sha(o.get("source_sha256"), f"{where}.source_sha256", optional=True),
            image=_str(o.get("image"), f"{where}.image", optional=True),
            secret_store=store,
        )


#: what a KFP placeholder the backend never resolved looks like (``{{$.pipeline_job_uuid}}``)
UNRESOLVED_PLACEHOLDER = "{{$"


@dataclass(frozen=True)
class RunInfo:
    """The pipeline run and task that made a record. A value still holding a KFP
    placeholder (``{{$.…}}``) is refused: the backend did not resolve it, and a record
    that names no real run is worse than one that names none."""

    pipeline: str | None = None
    run_id: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        self.check_resolved()

    def check_resolved(self) -> None:
        for k in ("pipeline", "run_id", "task"):
            v = getattr(self, k)
            if isinstance(v, str) and UNRESOLVED_PLACEHOLDER in v:
                raise RecordFormatError(
                    f"record field run.{k} is the unresolved KFP placeholder {v[:60]!r}: the KFP backend "
                    "resolves placeholders only when a task passes them as arguments, never in a "
                    "parameter's default; pass the run context explicitly at the call site "
                    "(mlseal.kfp components do)"
                )

    def to_obj(self) -> dict[str, JSON]:
        return {"pipeline": self.pipeline, "run_id": self.run_id, "task": self.task}

    @classmethod
    def from_obj(cls, v: object, where: str = "run") -> RunInfo:
        o = _obj(v, where)
        return cls(*(_str(o.get(k), f"{where}.{k}", optional=True) for k in ("pipeline", "run_id", "task")))


@dataclass(frozen=True)
class InputRef:
    name: str
    uri: str
    sha256: Sha256Hex
    producer_seq: int | None = None

    def to_obj(self) -> dict[str, JSON]:
        return {"name": self.name, "uri": self.uri, "digest": {"sha256": self.sha256},
                "producer_seq": self.producer_seq}

    @classmethod
    def from_obj(cls, v: object, where: str) -> InputRef:
        o, name, uri, sha = _artifact(v, where)
        return cls(
            name=name,
            uri=uri,
            sha256=sha,
            producer_seq=_int(o.get("producer_seq"), f"{where}.producer_seq", optional=True),
        )


@dataclass(frozen=True)
class OutputRef:
    name: str
    uri: str
    sha256: Sha256Hex
    media_type: str = "application/octet-stream"
    bundle_sha256: Sha256Hex | None = None

    def to_obj(self) -> dict[str, JSON]:
        return {"name": self.name, "uri": self.uri, "digest": {"sha256": self.sha256},
                "media_type": self.media_type, "bundle_sha256": self.bundle_sha256}

    @classmethod
    def from_obj(cls, v: object, where: str) -> OutputRef:
        o, name, uri, sha = _artifact(v, where)
        return cls(
            name=name,
            uri=uri,
            sha256=sha,
            media_type=_req_str(o.get("media_type", "application/octet-stream"), f"{where}.media_type"),
            bundle_sha256=_sha(o.get("bundle_sha256"), f"{where}.bundle_sha256", optional=True),
        )


@dataclass(frozen=True)
class SecretRef:
    """A secret by reference: where it lives and which version was read. Never a value."""

    path: str
    version: int | None = None

    def to_obj(self) -> dict[str, JSON]:
        return {"path": self.path, "version": self.version}

    @classmethod
    def from_obj(cls, v: object, where: str) -> SecretRef:
        o = _obj(v, where)
        return cls(
            path=_req_str(o.get("path"), f"{where}.path"),
            version=_int(o.get("version"), f"{where}.version", optional=True),
        )


@dataclass(frozen=True)
class SignerRef:
    name: str
    key_id: str

    def to_obj(self) -> dict[str, JSON]:
        return {"name": self.name, "key_id": self.key_id}

    @classmethod
    def from_obj(cls, v: object, where: str = "signer") -> SignerRef:
        o = _obj(v, where)
        return cls(_req_str(o.get("name"), f"{where}.name"), _req_str(o.get("key_id"), f"{where}.key_id"))


@dataclass(frozen=True, kw_only=True)
class RecordDraft:
    """What a step reports; the ledger adds seq, prev, time and signer when appending."""

    stage: str
    component: Component = field(default_factory=Component)
    run: RunInfo = field(default_factory=RunInfo)
    inputs: tuple[InputRef, ...] = ()
    outputs: tuple[OutputRef, ...] = ()
    params: Mapping[str, JSON] = field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    status: Status = Status.OK
    error: str | None = None

    def __post_init__(self) -> None:
        if not _STAGE.fullmatch(self.stage):
            raise RecordFormatError(
                f"record field stage must match {_STAGE.pattern}, got {self.stage[:80]!r}"
            )
        if isinstance(self.run, RunInfo):
            self.run.check_resolved()
        _check_json(dict(self.params), "params")
        for k, m in self.metrics.items():
            if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m):
                raise RecordFormatError(f"record field metrics.{k} must be a finite number, got {m!r}")
        if self.status is Status.FAILED and self.outputs:
            raise RecordFormatError("a failed step records no outputs")

    def validate(self) -> None:
        """Check every field's type and digest format (dataclasses do not), naming the
        first bad field; what passes here, `Record.from_obj` reads back unchanged."""
        def check(ok: bool, where: str, value: object) -> None:
            if not ok:
                shown = value[:80] if isinstance(value, str) else type(value).__name__
                raise RecordFormatError(f"record field {where} is invalid: {shown!r}")

        def opt_str(v: object) -> bool:
            return v is None or isinstance(v, str)

        def opt_int(v: object) -> bool:
            return v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53)

        c = self.component
        check(isinstance(c, Component), "component", c)
        check(isinstance(c.name, str), "component.name", c.name)
        check(c.source_sha256 is None or is_sha256_hex(c.source_sha256), "component.source_sha256", c.source_sha256)
        check(opt_str(c.image), "component.image", c.image)
        check(c.secret_store in (None, DEV_SECRET_STORE), "component.secret_store", c.secret_store)
        check(isinstance(self.run, RunInfo), "run", self.run)
        for k in ("pipeline", "run_id", "task"):
            check(opt_str(getattr(self.run, k)), f"run.{k}", getattr(self.run, k))
        check(isinstance(self.inputs, tuple), "inputs", self.inputs)
        for i, x in enumerate(self.inputs):
            w = f"inputs[{i}]"
            check(isinstance(x, InputRef), w, x)
            check(isinstance(x.name, str), f"{w}.name", x.name)
            check(isinstance(x.uri, str), f"{w}.uri", x.uri)
            check(is_sha256_hex(x.sha256), f"{w}.digest.sha256", x.sha256)
            check(opt_int(x.producer_seq), f"{w}.producer_seq", x.producer_seq)
        check(isinstance(self.outputs, tuple), "outputs", self.outputs)
        for i, o in enumerate(self.outputs):
            w = f"outputs[{i}]"
            check(isinstance(o, OutputRef), w, o)
            check(isinstance(o.name, str), f"{w}.name", o.name)
            check(isinstance(o.uri, str), f"{w}.uri", o.uri)
            check(is_sha256_hex(o.sha256), f"{w}.digest.sha256", o.sha256)
            check(isinstance(o.media_type, str), f"{w}.media_type", o.media_type)
            check(o.bundle_sha256 is None or is_sha256_hex(o.bundle_sha256), f"{w}.bundle_sha256", o.bundle_sha256)
        check(isinstance(self.secrets, tuple), "secrets", self.secrets)
        for i, sr in enumerate(self.secrets):
            check(isinstance(sr, SecretRef) and isinstance(sr.path, str), f"secrets[{i}].path", sr)
            check(opt_int(sr.version), f"secrets[{i}].version", sr.version)
        check(isinstance(self.status, Status), "status", self.status)
        check(opt_str(self.error), "error", self.error)

    def complete(self, *, seq: int, prev: str, time: str, signer: SignerRef) -> Record:
        return Record(seq=seq, prev=prev, time=time, signer=signer, **self._fields())

    def _fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RecordDraft.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class Record(RecordDraft):
    seq: int
    prev: str
    time: str
    signer: SignerRef
    v: int = RECORD_VERSION

    def draft(self) -> RecordDraft:
        return RecordDraft(**self._fields())

    def to_obj(self) -> dict[str, JSON]:
        obj: dict[str, JSON] = {
            "v": self.v,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "stage": self.stage,
            "component": self.component.to_obj(),
            "run": self.run.to_obj(),
            "inputs": [i.to_obj() for i in self.inputs],
            "outputs": [o.to_obj() for o in self.outputs],
            "params": dict(self.params),
            "secrets": [s.to_obj() for s in self.secrets],
            "metrics": dict(self.metrics),
            "signer": self.signer.to_obj(),
            "status": self.status.value,
        }
        if self.error is not None:
            obj["error"] = self.error
        return obj

    def canonical(self) -> bytes:
        """RFC 8785 bytes: what the DSSE envelope signs."""
        return _jcs.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, v: object) -> Record:
        o = _obj(v, "(record)")
        version = o.get("v")
        if version != RECORD_VERSION:
            raise RecordFormatError(f"record version {version!r} is not supported (this mlseal reads v1)")
        seq = _int(o.get("seq"), "seq")
        assert seq is not None
        prev = _sha(o.get("prev"), "prev")
        assert prev is not None
        status_raw = o.get("status", "ok")
        try:
            status = Status(status_raw)
        except ValueError:
            raise RecordFormatError(f"record field status must be ok or failed, got {status_raw!r}") from None
        metrics = _obj(o.get("metrics", {}), "metrics")
        return cls(
            seq=seq,
            prev=prev,
            time=_req_str(o.get("time"), "time"),
            stage=_req_str(o.get("stage"), "stage"),
            component=Component.from_obj(o.get("component", {})),
            run=RunInfo.from_obj(o.get("run", {})),
            inputs=_items(o, "inputs", InputRef.from_obj),
            outputs=_items(o, "outputs", OutputRef.from_obj),
            params=_obj(o.get("params", {}), "params"),
            secrets=_items(o, "secrets", SecretRef.from_obj),
            metrics=metrics,
            signer=SignerRef.from_obj(o.get("signer")),
            status=status,
            error=_str(o.get("error"), "error", optional=True),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        """Parse a record payload, accepting only its exact RFC 8785 encoding.

        The payload must be byte for byte ``record.canonical()`` of the record it
        parses to: no duplicate keys, key order, whitespace, escapes or number
        spellings other than RFC 8785's, and no fields the v1 schema does not write.
        Raises `NonCanonicalRecordError` (a `RecordFormatError`) naming the record and
        what is non-canonical.
        """
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise RecordFormatError("record payload is not valid JSON") from None
        record = cls.from_obj(obj)
        why = _canonical.problem(data, _canonical_or_raise(record))
        if why is not None:
            raise NonCanonicalRecordError(
                f"record {record.seq} ({record.stage}): payload is not the RFC 8785 canonical encoding "
                f"of its record: {why}; entries are written canonical by mlseal, so this one was "
                "written by other software or altered before signing"
            )
        return record
