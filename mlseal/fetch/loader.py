"""`fetch_model`: download a model, verify it while streaming, publish it only if it passes.

The checks (any failure: nothing in DEST, `VerificationError` or `ConfigurationError`
naming what failed):

1. the shape of a storage initializer / init container: DEST is an existing, empty
   directory (the model volume's mount point), the expected digest is given, SRC is a
   supported URI without credentials in it; with ``record=True`` the loader's key is
   granted ``serve`` records;
2. admission: `mlseal.admission.decide_model` with the loaded policy and
   ``ModelRef(uri=SRC, sha256=…)`` (trusted producer, recorded URI or its serving
   mapping, lineage, required stages, gates), over a verified view of the ledger that
   must extend the signed checkpoint the loader was given, if any (``checkpoint``:
   a rolled-back or forked ledger is refused, ``ledger_rolled_back`` / ``ledger_forked``);
3. the OMS bundle (``SRC.sig`` unless given): its sha256 is the one the producing
   record bound, it verifies with a key the trust file grants the producing stage, and
   the file list it signs has the expected digest;
4. the listing at SRC names exactly the signed files (a renamed, added or removed file
   is named; names that are not plain relative paths are refused before any write);
5. every file is hashed as it is downloaded into a private staging directory inside
   DEST (same filesystem); each file's sha256 must be the signed one, and the model
   digest (`mlseal.signing.digest.directory_digest`: names and kinds bound) the
   expected one;
6. publish: the verified files are renamed into DEST;
7. with ``record=True``: one ``serve`` record, signed by the loader's own identity, says
   which model (input: its digest and producer record) was served where.

The download (listing and bytes, step 4-5's I/O) runs while steps 2-3 are checked, so
verification costs little beyond the download itself; a refusal in 2-3 stops it, and
nothing is published before every step passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlseal.errors import ConfigurationError, Error, InfrastructureError, PolicyDenied, VerificationError
from mlseal.fetch.storage import Fetched, RemoteFile, Source, download, list_files, parse_source, read_small
from mlseal.ledger.record import Sha256Hex, is_sha256_hex

if TYPE_CHECKING:
    from mlseal.admission import Decision, Policy
    from mlseal.ledger.checkpoint import Trusted
    from mlseal.ledger.record import OutputRef, Record
    from mlseal.signing.digest import Manifest
    from mlseal.signing.keys import Signer

__all__ = [
    "MAX_BUNDLE",
    "PLACEMENT_ENV",
    "SERVE_STAGE",
    "STORAGE_LOGGERS",
    "TMP_PREFIX",
    "FetchDenied",
    "FetchResult",
    "Placement",
    "check_dest",
    "expected_digest",
    "fetch_model",
    "guard_logs",
    "record_signer",
    "scrub",
]

log = logging.getLogger(__name__)

#: the stage kind of the record `--record` appends
SERVE_STAGE = "serve"
#: a bundle larger than this is refused without being read
MAX_BUNDLE = 16 << 20
#: the temporary directory inside DEST (hidden; removed on failure and on the next run)
TMP_PREFIX = ".mlseal-fetch-"
#: downward-API environment variables read for the record (the pod spec sets them)
PLACEMENT_ENV = {
    "namespace": "POD_NAMESPACE",
    "pod": "POD_NAME",
    "workload": "MLSEAL_WORKLOAD",
    "node": "NODE_NAME",
    "pod_uid": "POD_UID",
}
_SENSITIVE = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE|SESSION", re.I)


#: storage client loggers: at DEBUG they print request headers (the AWS access key id
#: in Authorization) and credential lookups, so they stay at WARNING whatever -v says
STORAGE_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "gcsfs", "fsspec", "aiohttp", "urllib3",
                   "google", "google_auth_httplib2", "requests_oauthlib")


class _ScrubFilter(logging.Filter):
    """Replaces credential values from the environment in every log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def guard_logs() -> None:
    """Keep credentials out of the loader's log output (the CLI calls this first)."""
    for name in STORAGE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, _ScrubFilter) for f in h.filters):
            h.addFilter(_ScrubFilter())


class FetchDenied(PolicyDenied):
    """The model may not be served: the admission policy denies it (``codes``: the reasons)."""

    def __init__(self, message: str, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.codes = codes


@dataclass(frozen=True)
class Placement:
    """Where the model is served: from the downward API (see `PLACEMENT_ENV`)."""

    namespace: str | None = None
    workload: str | None = None
    pod: str | None = None
    node: str | None = None
    pod_uid: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Placement:
        e = os.environ if env is None else env
        return cls(**{k: (e.get(v) or None) for k, v in PLACEMENT_ENV.items()})

    def to_obj(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class FetchResult:
    uri: str
    dest: Path
    sha256: str
    files: int
    bytes: int
    producer_seq: int
    signer: str
    warnings: list[str] = field(default_factory=list)
    record_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": True, "uri": self.uri, "dest": str(self.dest), "sha256": self.sha256, "files": self.files,
            "bytes": self.bytes, "producer_seq": self.producer_seq, "signer": self.signer,
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.record_seq is not None:
            out["record_seq"] = self.record_seq
        return out


def scrub(text: str, env: Mapping[str, str] | None = None) -> str:
    """Remove the values of credential-like environment variables from a message."""
    e = os.environ if env is None else env
    for name, value in e.items():
        if _SENSITIVE.search(name) and len(value) >= 6 and value in text:
            text = text.replace(value, "***")
    return text


def expected_digest(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise ConfigurationError(
            "no model digest: pass --sha256 or set MLSEAL_MODEL_SHA256 (in a ClusterStorageContainer, from the "
            "pod annotation mlseal.dev/model-sha256 through the downward API); the loader refuses to fetch a "
            "model it cannot verify"
        )
    value = raw.strip().removeprefix("sha256:")
    if not is_sha256_hex(value):
        raise ConfigurationError(f"model digest {raw[:80]!r} is not 64 lowercase hex digits (from `mlseal digest`)")
    return value


def check_dest(dest: str | os.PathLike[str]) -> Path:
    """DEST must be the model volume: an existing, empty directory (a stale temporary
    directory of an interrupted run is removed)."""
    d = Path(dest)
    if d.is_symlink() or not d.is_dir():
        raise ConfigurationError(
            f"DEST {d} is not an existing directory: mlseal fetch runs as a storage initializer or init container "
            "and writes into the model volume's mount point (KServe: /mnt/models); mount an emptyDir there"
        )
    entries = [p for p in d.iterdir() if not (p.name.startswith(TMP_PREFIX) and p.is_dir() and not p.is_symlink())]
    if entries:
        shown = ", ".join(sorted(p.name for p in entries)[:5])
        raise ConfigurationError(
            f"DEST {d} is not empty ({shown}{', …' if len(entries) > 5 else ''}): the loader publishes only into "
            "an empty model volume, so nothing unverified can be served beside the model; mount a fresh emptyDir"
        )
    for stale in d.iterdir():
        shutil.rmtree(stale, ignore_errors=True)
    if not os.access(d, os.W_OK | os.X_OK):
        raise ConfigurationError(f"DEST {d} is not writable by this user (uid {os.getuid()})")
    return d


def _admission_uri(src: Source) -> str:
    # what the admission URI check compares with the recorded URI (file: an absolute path as file://)
    return src.uri


def _bundle_source(src: Source, bundle_uri: str | None) -> Source:
    if bundle_uri is not None:
        return parse_source(bundle_uri)
    if src.scheme in ("http", "https") and "?" in src.uri:
        raise ConfigurationError(
            f"storage URI {src.shown!r} has a query string, so the bundle's URI cannot be derived from it; "
            "pass --bundle URI"
        )
    # beside the model, through the same filesystem instance (one client, one credential lookup)
    return replace(src, uri=src.uri.rstrip("/") + ".sig", path=src.path.rstrip("/") + ".sig",
                   shown=src.shown.rstrip("/") + ".sig")


def _producer(led: Any, policy: Policy, sha: str) -> Record:
    from mlseal.ledger.trusted import TrustedReader

    answer = TrustedReader(led, policy.trust).producer_of(sha)
    if answer.record is None:
        why = "; ".join(str(p) for p in answer.problems) or "no trusted record lists it as an output"
        raise VerificationError(f"model sha256 {sha[:16]}… has no trusted producer in the ledger ({why})")
    return answer.record


def _output(producer: Record, sha: str) -> OutputRef:
    return next(o for o in producer.outputs if o.sha256 == sha)


def _signed_manifest(data: bytes, producer: Record, out: OutputRef, sha: str, policy: Policy,
                     shown: str) -> tuple[Manifest, str]:
    """The manifest the bundle signs, after its bytes, signer and digest were checked."""
    from mlseal.signing import oms
    from mlseal.signing.digest import Manifest, Resource
    from mlseal.signing.policy import policy_from_trust
    from mlseal.signing.sigstore_bundle import parse_bundle

    found = hashlib.sha256(data).hexdigest()
    if out.bundle_sha256 is not None and found != out.bundle_sha256:
        raise VerificationError(
            f"signature bundle {shown!r} (sha256 {found[:16]}…) is not the bundle record {producer.seq} bound "
            f"({out.bundle_sha256[:16]}…): replaced or tampered"
        )
    bundle = parse_bundle(data, source=f"bundle {shown}")
    try:
        auth = policy_from_trust(policy.trust).verify(bundle)
    except VerificationError as exc:
        raise VerificationError(f"signature bundle {shown!r} is not signed by a trusted key: {exc}") from None
    policy.trust.require_bundle_grant(auth.signer.key_id, producer.stage, f"signature bundle {shown!r}")
    if auth.message_sha256 is not None:
        manifest = Manifest("model", (Resource(".", auth.message_sha256),), (), False)
    elif auth.payload_type != oms.IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(
            f"signature bundle {shown!r} signs a {auth.payload_type!r} payload, not an OMS statement"
        )
    else:
        manifest = oms.parse_statement(auth.payload)
    if manifest.shard_size is not None:
        raise VerificationError(
            f"signature bundle {shown!r} uses the 'shards' serialization, which binds no per-file digests; "
            "sign the model with one digest per file (`mlseal sign`)"
        )
    try:
        signed = manifest.artifact_digest
    except ConfigurationError as exc:
        raise VerificationError(f"signature bundle {shown!r}: {exc}") from None
    if signed != sha:
        raise VerificationError(
            f"signature bundle {shown!r} signs model digest {signed[:16]}…, not the expected {sha[:16]}…"
        )
    return manifest, str(auth.signer)


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    rel = PurePosixPath(name)
    return any(rel == PurePosixPath(p) or rel.is_relative_to(PurePosixPath(p)) for p in ignore)


def _check_listing(src: Source, is_dir: bool, files: list[RemoteFile], manifest: Manifest) -> list[RemoteFile]:
    if not is_dir:
        if not manifest.is_file:
            raise VerificationError(
                f"{src.shown!r} is a single file, but the signed model is a directory of "
                f"{len(manifest.resources)} files"
            )
        return files
    if manifest.is_file:
        raise VerificationError(f"{src.shown!r} is a directory, but the signed model is a single file")
    files = [f for f in files if not _ignored(f.name, manifest.ignore_paths)]
    want = {r.name for r in manifest.resources}
    have = {f.name for f in files}
    problems = []
    if want - have:
        problems.append(f"signed file(s) missing: {', '.join(sorted(want - have)[:10])}")
    if have - want:
        problems.append(f"file(s) not covered by the signature: {', '.join(sorted(have - want)[:10])}")
    if problems:
        raise VerificationError(f"{src.shown!r} does not hold the signed model: " + "; ".join(problems))
    return files


def _check_bytes(src: Source, is_dir: bool, got: list[Fetched], manifest: Manifest, sha: str) -> None:
    from mlseal.signing.digest import DIRECTORY_TAG, Resource, directory_digest

    want = {r.name: r.sha256 for r in manifest.resources}
    bad = [f"{f.name if f.name != '.' else src.shown}: content differs (signed sha256 {want[f.name][:16]}…, "
           f"downloaded {f.sha256[:16]}…)" for f in got if want.get(f.name) != f.sha256]
    if bad:
        raise VerificationError(f"{src.shown!r}: the downloaded bytes are not the signed model: " + "; ".join(bad[:10]))
    if is_dir:
        digest = directory_digest(Resource(f.name, f.sha256) for f in got)
    else:
        (only,) = got
        if only.head.startswith(DIRECTORY_TAG):
            raise VerificationError(f"{src.shown!r} begins with mlseal's directory manifest tag; it is not a model")
        digest = only.sha256
    if digest != sha:
        raise VerificationError(f"{src.shown!r}: downloaded model digest {digest[:16]}… is not {sha[:16]}…")


def _publish(staged: Path, dest: Path) -> list[Path]:
    moved: list[Path] = []
    try:
        for entry in sorted(staged.iterdir()):
            target = dest / entry.name
            os.rename(entry, target)
            moved.append(target)
    except OSError as exc:
        _unpublish(moved)
        raise ConfigurationError(f"cannot publish the model into {dest}: {exc.strerror or exc}") from None
    return moved


def _unpublish(moved: list[Path]) -> None:
    for p in moved:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def record_signer(policy: Policy, env: Mapping[str, str] | None = None) -> tuple[Signer, str]:
    """The loader's own signer for `--record` and the trust-file name it goes by; the trust
    file must grant it ``serve`` records (checked before anything is downloaded)."""
    from mlseal.stage import stage_signer

    e = os.environ if env is None else env
    _, signer = stage_signer(e, SERVE_STAGE)
    kid = signer.key_id
    name = policy.trust.signer_name(kid)
    if name is None:
        raise ConfigurationError(
            f"--record: the loader's signing key ({kid[:16]}…) is not in the trust file {policy.trust.source}; list "
            f"it as a signer with stages: [{SERVE_STAGE}]"
        )
    problem = policy.trust.authorization_problem(kid, SERVE_STAGE)
    if problem is not None:
        raise ConfigurationError(f"--record: {problem}; grant the loader's key stages: [{SERVE_STAGE}]")
    return signer, e.get("MLSEAL_SIGNER_NAME") or name


def fetch_model(
    src_uri: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None,
    policy: Policy,
    bundle_uri: str | None = None,
    record: bool = False,
    record_ledger: str | None = None,
    placement: Placement | None = None,
    signer: tuple[Signer, str] | None = None,
    checkpoint: Trusted | None = None,
) -> FetchResult:
    """Verify and publish the model at `src_uri` into `dest` (see the module docstring).

    ``checkpoint``: a signed checkpoint accepted before (`mlseal.ledger.rollback.load_checkpoint`)
    that the ledger must extend."""
    sha = expected_digest(sha256)
    src = parse_source(src_uri)
    bsrc = _bundle_source(src, bundle_uri)
    d = check_dest(dest)
    where = placement or Placement.from_env()
    if record:
        if not where.namespace or not where.pod:
            raise ConfigurationError(
                "--record needs to know where the model is served: set POD_NAMESPACE and POD_NAME from the downward "
                "API (fieldRef metadata.namespace, metadata.name), and MLSEAL_WORKLOAD to the workload's name"
            )
        signer = signer or record_signer(policy)
    tmp = Path(os.path.join(d, TMP_PREFIX + os.urandom(6).hex()))
    staged = tmp / "model"
    moved: list[Path] = []
    cancel = threading.Event()
    try:
        staged.mkdir(parents=True)
        # The download (listing, bytes hashed as they arrive, into the private staging
        # directory) runs while the ledger, the policy and the bundle are checked; nothing
        # of it is published unless every check passed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlseal-fetch-download") as bg:
            listing: dict[str, tuple[bool, list[RemoteFile]]] = {}
            fut = bg.submit(_list_and_download, src, staged, cancel, listing)
            try:
                producer, out, decision, manifest, signer_shown = _provenance(src, bsrc, sha, policy, where,
                                                                              checkpoint)
                if "files" in listing:  # listed already: stop now if it is not the signed model
                    _check_listing(src, *listing["files"], manifest)
            except BaseException:
                cancel.set()
                wait([fut])
                raise
            is_dir, files, got = fut.result()
        # 4. the listing names exactly the signed files (ignored paths are not published)
        kept = {f.name for f in _check_listing(src, is_dir, files, manifest)}
        for f in got:
            if f.name not in kept:
                f.local.unlink(missing_ok=True)
        got = [f for f in got if f.name in kept]
        # 5. every file's digest and the model digest
        _check_bytes(src, is_dir, got, manifest, sha)
        # 6. publish
        moved = _publish(staged, d)
        result = FetchResult(uri=src.shown, dest=d, sha256=sha, files=len(got), bytes=sum(f.size for f in got),
                             producer_seq=producer.seq, signer=signer_shown, warnings=list(decision.warnings))
        # 7. what was served where
        if record:
            assert signer is not None
            url = record_ledger or policy.resolve_ledger_url()
            seq = _append_record(src, sha, producer, out, where, d, signer, url)
            result = replace(result, record_seq=seq)
        return result
    except BaseException:
        _unpublish(moved)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _list_and_download(src: Source, staged: Path, cancel: threading.Event,
                       listing: dict[str, tuple[bool, list[RemoteFile]]]) -> tuple[bool, list[RemoteFile],
                                                                                  list[Fetched]]:
    from mlseal.signing.digest import DEFAULT_IGNORED

    is_dir, files = list_files(src)
    if is_dir:
        files = [f for f in files if not _ignored(f.name, DEFAULT_IGNORED)]
    listing["files"] = (is_dir, files)
    base = PurePosixPath(src.path.rstrip("/")).name or "model"

    def target(f: RemoteFile) -> Path:
        return staged / (base if f.name == "." else f.name)

    return is_dir, files, download(src, files, target, cancel)


def _provenance(src: Source, bsrc: Source, sha: str, policy: Policy, where: Placement,
                checkpoint: Trusted | None = None) -> tuple[Record, OutputRef, Decision, Manifest, str]:
    """Steps 2 and 3: the admission decision, the producing record and the signed manifest."""
    from mlseal.admission import ModelRef, decide_model
    from mlseal.ledger import open_ledger
    from mlseal.ledger.recordcache import SHARED
    from mlseal.ledger.verified import VerifiedView, ViewFailed

    try:
        led_cm = open_ledger(policy.resolve_ledger_url(), create=False)
    except InfrastructureError as exc:
        from mlseal.ledger.dsn import redact_text

        raise VerificationError(f"the ledger could not be read ({redact_text(str(exc))}); the model is not fetched") \
            from None
    with led_cm as led:
        # one verified view for the decision and the producer; it must extend the checkpoint
        # the loader was given (a failed view denies, naming why: rolled back or forked)
        view = VerifiedView(led, policy.trust, verified=SHARED)
        if checkpoint is not None:
            with contextlib.suppress(ViewFailed):
                view.require(checkpoint)
        ref = ModelRef(kind="Pod", name=where.workload or where.pod or "", namespace=where.namespace,
                       sha256=Sha256Hex(sha), uri=_admission_uri(src),
                       where="the loader's storage URI (mlseal fetch SRC)")
        decision = decide_model(ref, policy, ledger=view, rules=policy.rules_for(where.namespace))
        if not decision.allowed:
            raise FetchDenied("the admission policy denies this model: " + "; ".join(decision.reasons),
                              tuple(str(c) for c in decision.codes))
        for w in decision.warnings:
            log.warning("policy (warn mode): %s", w)
        producer = _producer(view, policy, sha)
    out = _output(producer, sha)
    manifest, signer_shown = _signed_manifest(read_small(bsrc, bsrc.path, MAX_BUNDLE), producer, out, sha, policy,
                                              bsrc.shown)
    return producer, out, decision, manifest, signer_shown


def _append_record(src: Source, sha: str, producer: Record, out: OutputRef, where: Placement, dest: Path,
                   signer: tuple[Signer, str], ledger_url: str) -> int:
    from mlseal.ledger import open_ledger
    from mlseal.ledger.record import Component, InputRef, RecordDraft

    draft = RecordDraft(
        stage=SERVE_STAGE,
        component=Component(name="fetch", image=os.environ.get("MLSEAL_IMAGE") or None),
        inputs=(InputRef(name="model", uri=out.uri, sha256=Sha256Hex(sha), producer_seq=producer.seq),),
        params={"served": where.to_obj(), "dest": str(dest), "source": src.shown},
    )
    try:
        with open_ledger(ledger_url, create=False) as led:
            appended = led.append(draft, signer[0], signer_name=signer[1])
    except Error:
        raise
    return int(appended.seq)
