"""The sealed-stage runtime: fail closed on inputs, sign every output, record one entry.

Every mlseal component runs its work inside a `Stage`, and users can wrap their own
steps the same way (a context manager, or the `sealed` decorator). A stage:

1. refuses an input unless its digest is a recorded output of a ledger record signed by
   a trusted signer and the artifact's OMS bundle verifies (`VerificationError`; nothing
   is written, not even a ledger record);
2. hands out secrets by reference (a Vault path) and remembers path + version, never
   the value;
3. gives each output a temporary path, and only when the body succeeded moves it into
   place, digests it, signs it (an OMS bundle at ``PATH.sig``) and
4. appends ONE ledger record with inputs (and the seq of their producers), outputs
   (digest + bundle digest), params, metrics, secrets by reference, the component's
   source digest, the image when known and the KFP run/task ids;
5. if the body fails, removes its partial outputs and appends a record with status
   ``failed`` and no outputs, so audits see the attempt.

    >>> import tempfile, pathlib
    >>> from mlseal.stage import Sealing, Stage
    >>> sealing = Sealing.from_env()                      # doctest: +SKIP
    >>> with Stage("process", name="clean", sealing=sealing) as st:  # doctest: +SKIP
    ...     raw = st.input("raw", "data/raw.csv")         # verified before it is read
    ...     out = st.output("clean", "data/clean.csv")    # a temp path; moved on success
    ...     out.write_text(raw.read_text().lower())
    ...     st.metric("rows", 10)
    >>> st.result.seq                                     # doctest: +SKIP
    3

Services (ledger, signer, trust, secret source, artifact signing) are passed in a
`Sealing`; `Sealing.from_env()` builds the production defaults from the environment
(`MLSEAL_LEDGER`, `MLSEAL_TRUST`, `MLSEAL_SIGNING_KEY` or `MLSEAL_VAULT_TRANSIT_KEY`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from mlseal._files import remove_path
from mlseal.errors import ConfigurationError, Error, InfrastructureError, VerificationError
from mlseal.ledger.checkpoint import (
    Accepted,
    Checkpoint,
    CheckpointLedger,
    RollbackError,
    Trusted,
    accept,
    expected_origin,
    prove_consistency,
    require_included,
    verify_notes,
)
from mlseal.ledger.protocols import LedgerWriter
from mlseal.ledger.record import (
    DEV_SECRET_STORE,
    UNRESOLVED_PLACEHOLDER,
    Component,
    InputRef,
    OutputRef,
    Record,
    RecordDraft,
    RecordFormatError,
    RunInfo,
    SecretRef,
    Sha256Hex,
    StageKind,
    Status,
)
from mlseal.ledger.trusted import TrustedReader
from mlseal.secrets.refs import check_parameter
from mlseal.signing.keys import Signer

if TYPE_CHECKING:
    from mlseal.secrets import DataKey, KVSecret, Secret, SecretSource
    from mlseal.signing.authenticated import SignedBy
    from mlseal.signing.trust import TrustRoot

__all__ = [
    "MEDIA_CSV",
    "MEDIA_JSON",
    "MEDIA_YAML",
    "RUN_ENV",
    "InputRefused",
    "SealedOutput",
    "Sealing",
    "Stage",
    "StageResult",
    "VerifiedInput",
    "check_task_environment",
    "in_kfp_task",
    "run_info_from_env",
    "sealed",
    "signing_key_name",
    "source_sha256",
    "stage_signer",
    "with_run",
]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: media types the runtime records for the artifacts the components write
MEDIA_CSV = "text/csv"
MEDIA_JSON = "application/json"
MEDIA_YAML = "application/yaml"

#: environment variables a stage reads its run context from (KFP sets none of these by
#: itself; mlseal components pass the KFP placeholders, other runners may set them)
RUN_ENV = {
    "pipeline": ("MLSEAL_PIPELINE", "KFP_PIPELINE_NAME"),
    "run_id": ("MLSEAL_RUN_ID", "KFP_RUN_ID", "ARGO_WORKFLOW_NAME"),
    "task": ("MLSEAL_TASK", "KFP_TASK_NAME", "KFP_POD_NAME"),
}

_ERROR_TEXT_MAX = 500


class InputRefused(VerificationError):
    """An input artifact is not a trusted, recorded, signed output: the stage fails closed."""


# --- the services a stage needs (injected; production defaults in `Sealing.from_env`) ---


def _default_digest(path: Path) -> str:
    from mlseal.signing.digest import digest_path

    return str(digest_path(path))


def _default_sign(path: Path, signer: Signer) -> Path:
    from mlseal.signing.artifact import sign_path

    return Path(sign_path(path, signer))


def _default_verify(path: Path, bundle: Path, trust: TrustRoot) -> SignedBy:
    from mlseal.signing.artifact import verify_path

    return verify_path(path, bundle, trust).signer


def _default_parse_entry(data: bytes, trust: TrustRoot) -> Record:
    from mlseal.ledger.entry import parse_entry

    return parse_entry(data, trust)


@dataclass(frozen=True, kw_only=True)
class Sealing:
    """Everything a stage talks to. Constructing one does no I/O."""

    ledger: LedgerWriter
    signer: Signer
    trust: TrustRoot
    signer_name: str = "pipeline"
    secrets: SecretSource | None = None
    image: str | None = None
    run: RunInfo = field(default_factory=RunInfo)
    digest: Callable[[Path], str] = _default_digest
    sign_artifact: Callable[[Path, Signer], Path] = _default_sign
    verify_artifact: Callable[[Path, Path, TrustRoot], SignedBy | None] = _default_verify
    parse_entry: Callable[[bytes, TrustRoot], Record] = _default_parse_entry

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, stage: str | None = None, **overrides: Any
    ) -> Sealing:
        """Production defaults from the environment (what a KFP component pod sees).

        - `MLSEAL_LEDGER`: ledger URL (default `sqlite:///.mlseal/ledger.db`; required
          inside a KFP task, where that default would be a file in the pod)
        - `MLSEAL_TRUST`: trust file naming who may sign which stage
        - `MLSEAL_SIGNING_KEY` (PEM path) or `MLSEAL_VAULT_TRANSIT_KEY` (Transit key name;
          default ``mlseal-signing-<stage>``: each stage kind signs with its own key)
        - `MLSEAL_SIGNER_NAME` (default: the stage kind), `MLSEAL_IMAGE` (image ref or digest)
        - Vault (`VAULT_ADDR`, ...) or the dev store (`MLSEAL_DEV_SECRETS`), through
          `mlseal.secrets`; inside a KFP task the dev store only when `MLSEAL_DEV_SECRETS`
          names it, never as a silent fallback
        """
        env = os.environ if environ is None else environ
        from mlseal.ledger import open_ledger
        from mlseal.signing.trust import load_trust

        trust_path = env.get("MLSEAL_TRUST")
        if not trust_path:
            raise ConfigurationError(
                "MLSEAL_TRUST is not set: a stage needs a trust file that says who may sign which stage "
                "(on a cluster, mlseal.kfp.wire mounts it from the ConfigMap mlseal-trust)"
            )
        check_task_environment(env, ledger_url=env.get("MLSEAL_LEDGER"))
        secrets, signer = stage_signer(env, stage)
        try:
            ledger = open_ledger(env.get("MLSEAL_LEDGER") or None)
        except InfrastructureError as exc:
            raise ConfigurationError(
                f"the ledger does not answer ({exc}); check MLSEAL_LEDGER and that this task may reach it"
            ) from None
        values: dict[str, Any] = {
            "ledger": ledger,
            "signer": signer,
            "trust": load_trust(trust_path),
            "signer_name": env.get("MLSEAL_SIGNER_NAME") or stage or "pipeline",
            "secrets": secrets,
            "image": env.get("MLSEAL_IMAGE") or None,
            "run": run_info_from_env(env),
        }
        values.update(overrides)
        return cls(**values)

    def preflight(self, stage: str, *, component_sha256: str | None = None) -> Accepted | None:
        """Before any work: the ledger answers and this stage's own signer is trusted for it.

        Otherwise `ConfigurationError` naming the missing piece and the fix, and the
        stage appends nothing: a record the trust file does not allow would break
        `ledger verify` for good, since an append-only log cannot be repaired.

        When the trust file lists ``checkpoint_keys``, also: the newest stored checkpoint
        signed by one of them must be extended by the current tree, and the last entry
        must be the tree's last leaf (`mlseal.ledger.checkpoint.accept`); a rolled-back or
        forked ledger raises `RollbackError` and nothing is appended. Returns what was
        accepted (None without checkpoint keys).
        """
        try:
            self.ledger.size()
        except Error as exc:
            raise ConfigurationError(
                f"the ledger does not answer ({exc}); check MLSEAL_LEDGER and that this task may reach it"
            ) from None
        try:
            kid = self.signer.key_id
        except Error as exc:
            raise ConfigurationError(f"the signing key for stage {stage!r} is not usable: {exc}") from None
        source = self.trust.source
        if kid not in self.trust.signers:
            raise ConfigurationError(
                f"this stage's signer {self.signer_name!r} (key {kid[:16]}…) is not listed in the trust file "
                f"{source}, so its record would never verify; add it: "
                f"signers: [{{name: {self.signer_name}, public_key: <its public key PEM>, stages: [{stage}]}}]"
            )
        why = self.trust.authorization_problem(kid, stage, component_sha256, self.image)
        if why is not None:
            raise ConfigurationError(
                f"this stage's {why}; sign {stage!r} records with the {stage} stage's own key "
                f"({signing_key_name(stage)}), or extend the signer's grant in the trust file"
            )
        return self.accept_ledger()

    def accept_ledger(self, known: tuple[Trusted, ...] = ()) -> Accepted | None:
        """`checkpoint.accept` on this stage's ledger when the trust file has checkpoint keys."""
        if not self.trust.checkpoint_keys:
            return None
        led = _checkpoint_ledger(self.ledger)
        try:
            return accept(led, self.trust, known=known)
        except RollbackError as exc:
            raise RollbackError(f"ledger refused, nothing appended: {exc}") from None


def check_task_environment(environ: Mapping[str, str], *, ledger_url: str | None) -> None:
    """Inside a KFP task: a shared ledger and a real secret store, or `ConfigurationError`.

    Outside a task nothing is required (a developer's defaults are fine).
    """
    if not in_kfp_task(environ):
        return
    if not ledger_url:
        raise ConfigurationError(
            "MLSEAL_LEDGER is not set in this KFP task: the default sqlite:///.mlseal/ledger.db would be a "
            "file inside the pod, lost with it; wire the task to the shared ledger (mlseal.kfp.wire)"
        )
    if environ.get("KFP_POD_NAME") and ledger_url.startswith("sqlite:"):
        raise ConfigurationError(
            f"MLSEAL_LEDGER is a SQLite file ({ledger_url.split('?', 1)[0]}) in this KFP pod: it would be "
            "created in the pod and lost with it; wire the task to the shared PostgreSQL ledger (mlseal.kfp.wire)"
        )
    if not environ.get("VAULT_ADDR") and not environ.get("MLSEAL_DEV_SECRETS"):
        raise ConfigurationError(
            "VAULT_ADDR is not set in this KFP task, and the dev secret store is not enabled: set VAULT_ADDR "
            "and MLSEAL_VAULT_K8S_ROLE (mlseal.kfp.wire does), or MLSEAL_DEV_SECRETS=DIR to use the local "
            "dev store on purpose (its records say secret_store: dev)"
        )


def stage_signer(environ: Mapping[str, str], stage: str | None) -> tuple[SecretSource, Signer]:
    """The secret source and the signer a stage of kind `stage` uses, from the environment:
    `MLSEAL_SIGNING_KEY` (a PEM), else the Transit key `MLSEAL_VAULT_TRANSIT_KEY` or the
    stage kind's own ``mlseal-signing-<stage>``, in Vault or the dev store `MLSEAL_DEV_SECRETS`."""
    from mlseal.secrets import open_secret_source
    from mlseal.signing.keys import LocalKeySigner

    secrets = open_secret_source(environ.get("MLSEAL_DEV_SECRETS") or None, env=environ)
    key = environ.get("MLSEAL_SIGNING_KEY")
    signer: Signer
    if key:
        signer = LocalKeySigner.from_file(key)
    else:  # the private key stays in Vault Transit (or the dev store standing in for it)
        signer = secrets.transit_signer(environ.get("MLSEAL_VAULT_TRANSIT_KEY") or signing_key_name(stage))
    return secrets, signer


def signing_key_name(stage: str | None) -> str:
    """The Transit (or dev store) key a stage kind signs with: one identity per stage kind."""
    return f"mlseal-signing-{stage}" if stage else "mlseal-signing"


def in_kfp_task(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a KFP task (the executor sets ``_KFP_RUNTIME``, the backend
    ``KFP_POD_NAME``)."""
    env = os.environ if environ is None else environ
    return env.get("_KFP_RUNTIME", "").lower() == "true" or bool(env.get("KFP_POD_NAME"))


def run_info_from_env(environ: Mapping[str, str] | None = None) -> RunInfo:
    env = os.environ if environ is None else environ

    def first(names: tuple[str, ...]) -> str | None:
        name = next((n for n in names if env.get(n)), None)
        if name is not None and UNRESOLVED_PLACEHOLDER in env[name]:
            raise ConfigurationError(
                f"{name} {env[name][:60]!r} is an unresolved KFP placeholder: the KFP backend resolves "
                "placeholders only in arguments a task passes, so pass the run context there"
            )
        return env[name] if name is not None else None

    try:
        return RunInfo(**{k: first(v) for k, v in RUN_ENV.items()})
    except RecordFormatError as exc:
        raise ConfigurationError(str(exc)) from None


def source_sha256(obj: object) -> Sha256Hex:
    """Digest of the source code of a function, class or module: the component's identity."""
    try:
        text = inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        text = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    return Sha256Hex(hashlib.sha256(text.encode()).hexdigest())


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedInput:
    name: str
    path: Path
    sha256: Sha256Hex
    producer_seq: int
    producer: Record


@dataclass(frozen=True)
class SealedOutput:
    name: str
    path: Path
    uri: str
    sha256: Sha256Hex
    bundle: Path
    bundle_sha256: Sha256Hex
    media_type: str


@dataclass(frozen=True)
class StageResult:
    """What a finished stage appended: its ledger seq, entry hash and sealed outputs."""

    seq: int
    entry_hash: str
    status: Status
    outputs: Mapping[str, SealedOutput]
    record: Record | None = None
    #: the signed checkpoint the stage accepted (the largest it checked the ledger against),
    #: for downstream tasks to require consistency from (None: no checkpoint keys or none yet)
    checkpoint: bytes | None = None


# --- the stage -------------------------------------------------------------------------


@dataclass
class _PendingOutput:
    name: str
    final: Path
    temp: Path
    media_type: str
    is_dir: bool
    in_place: bool = False
    owned: bool = False  # in place, but written by this stage: removed if it fails
    uri: str | None = None


class Stage:
    """A sealed step. Use as a context manager; see the module docstring."""

    def __init__(
        self,
        kind: str | StageKind,
        *,
        name: str,
        sealing: Sealing,
        params: Mapping[str, Any] | None = None,
        source: object | None = None,
        source_digest: str | None = None,
    ) -> None:
        self.kind = str(kind)
        self.name = name
        try:  # a kind the record schema refuses is the caller's mistake: say so before any work
            RecordDraft(stage=self.kind, run=sealing.run)
        except RecordFormatError as exc:
            raise ConfigurationError(f"stage {name}: {exc}") from None
        self.sealing = sealing
        self.params: dict[str, Any] = dict(params or {})
        for key, value in self.params.items():  # params are public: secrets only by reference
            _check_param(key, value, f"stage {name}: param {key}")
        self.metrics: dict[str, float] = {}
        if source_digest is None and source is not None:
            source_digest = source_sha256(source)
        self._source_digest = Sha256Hex(source_digest) if source_digest else None
        self._inputs: list[VerifiedInput] = []
        self._input_uris: dict[str, str] = {}
        self._outputs: list[_PendingOutput] = []
        self._secrets: list[SecretRef] = []
        self._revealed: list[str] = []  # values to scrub from an error text, never stored
        self._refusal: BaseException | None = None
        self._accepted: Accepted | None = None
        self._entered = False
        self.result: StageResult | None = None

    def __repr__(self) -> str:
        return f"Stage({self.kind!r}, name={self.name!r})"

    # -- inputs --------------------------------------------------------------------

    def input(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        bundle: str | os.PathLike[str] | bytes | None = None,
        uri: str | None = None,
        expect_sha256: str | None = None,
        producer_seq: int | None = None,
        producer_entry_sha256: str | None = None,
        checkpoint: bytes | None = None,
    ) -> Path:
        """Verify an input artifact and return its path; raise `InputRefused` otherwise.

        Checks, in order: (0) if the caller knows which artifact it should be (e.g. the
        digest the upstream KFP task put in the artifact's metadata), the digest is that
        one — so another recorded, signed artifact cannot be swapped in; (1) the digest is
        an output of at least one ledger record; (2) that record's entry is signed by a
        trusted signer and the record did not fail; (3) the OMS bundle (``PATH.sig``, or
        `bundle`) hashes to the recorded `bundle_sha256` and (4) verifies over the
        artifact with a trusted key.

        What the upstream task passed along is checked too: its record is still entry
        ``producer_seq`` with SHA-256 ``producer_entry_sha256``, a leaf of the current tree,
        and the ledger extends the ``checkpoint`` it accepted (verified against the trust
        file's checkpoint keys); the deciding record must be a leaf of the current tree as
        well. A ledger rolled back or forked since raises `RollbackError`.
        """
        self._require_entered()
        p = Path(path)
        known = next((i for i in self._inputs if i.name == name), None)
        if known is not None:  # verified already (e.g. by mlseal.kfp before the body ran)
            if known.path.resolve() != p.resolve():
                raise ConfigurationError(f"stage {self.name}: input {name!r} declared twice, for {known.path} and {p}")
            return known.path
        try:
            verified = self._verify_input(name, p, bundle, expect_sha256)
            self._check_upstream(verified, producer_seq, producer_entry_sha256, checkpoint)
        except RollbackError as exc:
            self._refusal = RollbackError(f"stage {self.name}: input {name!r} refused: {exc}")
            raise self._refusal from None
        except VerificationError as exc:
            self._refusal = InputRefused(f"stage {self.name}: input {name!r} refused: {exc}")
            raise self._refusal from None
        except Error as exc:
            self._refusal = exc
            raise
        self._inputs.append(verified)
        self._input_uris[name] = uri or p.resolve().as_uri()
        return p

    def _verify_input(
        self, name: str, path: Path, bundle: str | os.PathLike[str] | bytes | None, expect: str | None
    ) -> VerifiedInput:
        s = self.sealing
        if not path.exists():
            raise VerificationError(f"{path} does not exist")
        sha = Sha256Hex(s.digest(path))
        # (0) the artifact the caller was handed
        if expect is not None and sha != expect:
            raise VerificationError(
                f"digest {sha[:16]}… of {path} is not the {expect[:16]}… its producer recorded for it "
                "(changed or swapped for another artifact)"
            )
        # (1) a recorded output, (2) its producer by the TrustedReader rule: the newest OK
        # record that outputs it, verified against the trust file and hash-linked to its successor
        reader = TrustedReader(s.ledger, s.trust, parse=s.parse_entry)
        answer = reader.producer_of(sha)
        if not answer.candidates:
            raise VerificationError(f"digest {sha[:16]}… of {path} was never recorded as an output")
        record = answer.record
        if record is None:
            problems = [f"record {p.seq}: {p}" for p in answer.problems] or [
                f"no record with status ok lists digest {sha[:16]}… as an output"]
            raise VerificationError("no trusted producer: " + "; ".join(problems))
        out = next(o for o in record.outputs if o.sha256 == sha)
        bundle_path, cleanup = _bundle_file(path, bundle)
        try:
            if not bundle_path.exists():
                raise VerificationError(f"no signature bundle for {path} (looked for {bundle_path})")
            bundle_sha = _sha256_file(bundle_path)
            # (3) the bundle is the one that was recorded: by the deciding record, or (the same
            # bytes recorded again, elsewhere) by another verified, hash-linked OK producer of them
            if (out.bundle_sha256 is not None and out.bundle_sha256 != bundle_sha
                    and not _bound_elsewhere(reader, answer.candidates, sha, bundle_sha)):
                raise VerificationError(
                    f"record {record.seq} bound bundle {out.bundle_sha256[:16]}…, found {bundle_sha[:16]}…"
                )
            # (4) the bundle verifies over these bytes with a trusted key, granted the stage
            # that produced them (as the loader requires of a model's bundle)
            signer = s.verify_artifact(path, bundle_path, s.trust)
            if signer is not None:
                s.trust.require_bundle_grant(signer.key_id, record.stage,
                                             f"signature bundle {bundle_path} of record {record.seq}'s output")
            return VerifiedInput(name=name, path=path, sha256=sha, producer_seq=record.seq, producer=record)
        finally:
            if cleanup:
                shutil.rmtree(cleanup, ignore_errors=True)

    def _check_upstream(
        self, verified: VerifiedInput, seq: int | None, entry_sha256: str | None, checkpoint: bytes | None
    ) -> None:
        s = self.sealing
        if seq is None and checkpoint is None and self._accepted is None and not s.trust.checkpoint_keys:
            return
        led = _checkpoint_ledger(s.ledger)
        known: tuple[Trusted, ...] = ()
        if checkpoint is not None:
            known = tuple(verify_notes([checkpoint], s.trust, where="the checkpoint its producer accepted"))
        head = led.head()
        # the tree this stage accepted, and every checkpoint it was handed, must still be extended
        self._require_extends(led, head, known)
        if seq is not None:
            require_included(led, seq, head, entry_sha256=entry_sha256)
        require_included(led, verified.producer_seq, head)
        best = self._accepted.checkpoint if self._accepted else None
        for t in known:
            if best is None or t.checkpoint.size > best.checkpoint.size:
                best = t
        self._accepted = Accepted(best, head)

    def _require_extends(self, led: CheckpointLedger, head: Any, known: tuple[Trusted, ...] = ()) -> None:
        olds: list[Checkpoint] = [t.checkpoint for t in known]
        if self._accepted is not None:
            a = self._accepted
            if a.checkpoint is not None:
                olds.append(a.checkpoint.checkpoint)
            olds.append(Checkpoint(expected_origin(self.sealing.trust), a.head.size, a.head.root))
        for old in olds:
            prove_consistency(led, old, head)

    def _check_before_append(self) -> None:
        """Right before appending: the ledger still extends what this stage accepted."""
        if self._accepted is None:
            return
        led = _checkpoint_ledger(self.sealing.ledger)
        head = led.head()
        try:
            self._require_extends(led, head)
            if head.size:
                require_included(led, head.size - 1, head, entry_sha256=head.last_entry_hash or None)
        except RollbackError as exc:
            self._refusal = RollbackError(f"stage {self.name}: ledger refused, nothing appended: {exc}")
            raise self._refusal from None
        self._accepted = Accepted(self._accepted.checkpoint, head)

    @property
    def inputs(self) -> tuple[VerifiedInput, ...]:
        return tuple(self._inputs)

    # -- secrets -------------------------------------------------------------------

    def secret(self, path: str, *, version: int | None = None, key: bool = False) -> KVSecret:
        """Read a secret by reference; the ledger records its path and version only.

        With ``key=True`` the secret is a random key (field ``key``) that the dev store
        creates on first use; Vault must already hold it.
        """
        src = self._source()
        value = src.ensure_key(path) if key and version is None else src.read(path, version)
        self.use_secret(value.path, value.version)
        self._remember(*value.data.values())
        return value

    def use_secret(self, path: str, version: int | None) -> None:
        """Record that a secret (or key) was used, by reference: path and version."""
        ref = SecretRef(path=path, version=version)
        if ref not in self._secrets:
            self._secrets.append(ref)

    def data_key(self, key_name: str = "mlseal-data") -> DataKey:
        """A fresh data key from Transit (or the dev store); records the key by name and version."""
        dk = self._source().data_key(key_name)
        self.use_secret(f"transit/{key_name}", _wrapped_version(dk.wrapped))
        self._remember(dk.plaintext)
        return dk

    def unwrap_data_key(self, wrapped: str, key_name: str = "mlseal-data") -> Secret[bytes]:
        """Unwrap a stored data key (decrypt-on-read); records the key by name and version."""
        plain = self._source().unwrap_data_key(wrapped, key_name)
        self.use_secret(f"transit/{key_name}", _wrapped_version(wrapped))
        self._remember(plain)
        return plain

    def _source(self) -> SecretSource:
        self._require_entered()
        if self.sealing.secrets is None:
            raise ConfigurationError(f"stage {self.name} needs a secret source and has none")
        return self.sealing.secrets

    def _remember(self, *values: Secret[Any]) -> None:
        """Keep revealed values in memory only, to scrub them from a failure's error text."""
        for v in values:
            revealed = v.reveal()
            if isinstance(revealed, bytes):
                self._revealed.append(revealed.hex())
                revealed = revealed.decode("latin-1")
            if isinstance(revealed, str) and len(revealed) >= 4:
                self._revealed.append(revealed)

    # -- outputs -------------------------------------------------------------------

    def output(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        media_type: str = "application/octet-stream",
        directory: bool = False,
        uri: str | None = None,
    ) -> Path:
        """A temporary path to write output `name` to; moved to `path` when the stage succeeds."""
        self._require_new_output(name)
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        # 12 random hex digits (not uuid, whose import costs every KFP task ~5 ms)
        temp = final.with_name(f".{final.name}.mlseal-{os.urandom(6).hex()}.tmp")
        if directory:
            temp.mkdir()
        self._outputs.append(_PendingOutput(name, final, temp, media_type, directory, uri=uri))
        return temp

    def _require_new_output(self, name: str) -> None:
        self._require_entered()
        if any(o.name == name for o in self._outputs):
            raise ConfigurationError(f"stage {self.name}: output {name!r} declared twice")

    def existing_output(
        self, name: str, path: str | os.PathLike[str], *, media_type: str = "application/octet-stream"
    ) -> Path:
        """Seal an artifact some other program already wrote (`mlseal record`); never deleted."""
        self._require_new_output(name)
        p = Path(path)
        if not p.exists():
            raise ConfigurationError(f"stage {self.name}: output {name!r}: {p} does not exist")
        self._outputs.append(_PendingOutput(name, p, p, media_type, p.is_dir(), in_place=True))
        return p

    def adopt_output(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        media_type: str = "application/octet-stream",
        uri: str | None = None,
    ) -> Path:
        """Seal an output the body wrote in place at `path` (a KFP output artifact's path).

        Unlike `existing_output`, the stage owns it: if the stage fails, it is removed,
        so no half-written artifact is left for KFP to upload.
        """
        self._require_new_output(name)
        p = Path(path)
        self._outputs.append(_PendingOutput(name, p, p, media_type, p.is_dir(), in_place=True, owned=True, uri=uri))
        return p

    def declared_outputs(self) -> frozenset[str]:
        return frozenset(o.name for o in self._outputs)

    def metric(self, name: str, value: float) -> None:
        self.metrics[name] = float(value)

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Stage:
        if self._entered:
            raise ConfigurationError(f"stage {self.name} entered twice")
        self._accepted = self.sealing.preflight(self.kind, component_sha256=self._source_digest)
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.result = self._commit()
            except BaseException as commit_exc:
                self._discard()
                if commit_exc is not self._refusal:  # a refused ledger gets no record at all
                    self._append_failed(commit_exc)
                raise
            return
        self._discard()
        if exc is self._refusal:
            log.error("stage %s failed closed; nothing written", self.name)
            return
        self._append_failed(exc)

    def _require_entered(self) -> None:
        if not self._entered:
            raise ConfigurationError(f"stage {self.name}: use it as `with Stage(...) as st:`")

    def _discard(self) -> None:
        for o in self._outputs:
            if o.in_place:
                if self.result is None:
                    remove_path(_sig_of(o.final))
                    if o.owned:
                        remove_path(o.final)
                continue
            for p in (o.temp, *(() if self.result is not None else (o.final, _sig_of(o.final)))):
                remove_path(p)

    def _commit(self) -> StageResult:
        s = self.sealing
        sealed: dict[str, SealedOutput] = {}
        for o in self._outputs:
            if not o.temp.exists() or (not o.is_dir and not o.temp.is_file()):
                raise ConfigurationError(f"stage {self.name}: output {o.name!r} was not written")
        for o in self._outputs:
            # Move into place first: an OMS manifest names the file, so sign the final name.
            if not o.in_place:
                remove_path(o.final)
                os.replace(o.temp, o.final)
            sha = Sha256Hex(s.digest(o.final))
            bundle = s.sign_artifact(o.final, s.signer)
            sealed[o.name] = SealedOutput(
                name=o.name,
                path=o.final,
                uri=o.uri or o.final.resolve().as_uri(),
                sha256=sha,
                bundle=bundle,
                bundle_sha256=_sha256_file(bundle),
                media_type=o.media_type,
            )
        draft = self._draft(
            outputs=tuple(
                OutputRef(
                    name=x.name,
                    uri=x.uri,
                    sha256=x.sha256,
                    media_type=x.media_type,
                    bundle_sha256=x.bundle_sha256,
                )
                for x in sealed.values()
            ),
            status=Status.OK,
        )
        self._check_before_append()
        appended = s.ledger.append(draft, s.signer, signer_name=s.signer_name)
        accepted = self._accepted.checkpoint if self._accepted is not None else None
        return StageResult(
            seq=appended.seq,
            entry_hash=appended.entry_hash,
            status=Status.OK,
            outputs=sealed,
            record=getattr(appended, "record", None),
            checkpoint=accepted.note if accepted is not None else None,
        )

    def _append_failed(self, exc: BaseException) -> None:
        s = self.sealing
        draft = self._draft(outputs=(), status=Status.FAILED, error=self._error_text(exc))
        try:
            appended = s.ledger.append(draft, s.signer, signer_name=s.signer_name)
        except Error as append_exc:
            log.error("stage %s failed and its failure could not be recorded: %s", self.name, append_exc)
            return
        self.result = StageResult(
            seq=appended.seq,
            entry_hash=appended.entry_hash,
            status=Status.FAILED,
            outputs={},
            record=getattr(appended, "record", None),
        )
        log.error("stage %s failed; recorded as ledger entry %d", self.name, appended.seq)

    def _error_text(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for value in self._revealed:  # an error text must never carry a secret it saw
            text = text.replace(value, "***")
        return text[:_ERROR_TEXT_MAX]

    def _draft(self, *, outputs: tuple[OutputRef, ...], status: Status, error: str | None = None) -> RecordDraft:
        s = self.sealing
        return RecordDraft(
            stage=self.kind,
            component=Component(
                name=self.name,
                source_sha256=self._source_digest,
                image=s.image,
                secret_store=DEV_SECRET_STORE if s.secrets is not None and s.secrets.kind == "dev" else None,
            ),
            run=s.run,
            inputs=tuple(
                InputRef(name=i.name, uri=self._input_uris[i.name], sha256=i.sha256, producer_seq=i.producer_seq)
                for i in self._inputs
            ),
            outputs=outputs,
            params=_jsonable(self.params),
            secrets=tuple(self._secrets),
            metrics=dict(self.metrics),
            status=status,
            error=error,
        )


def sealed(
    kind: str | StageKind,
    *,
    name: str | None = None,
    sealing: Sealing | Callable[[], Sealing] | None = None,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorator: run `fn(stage, *args, **kwargs)` inside a `Stage`.

    Keyword arguments that are plain JSON values are recorded as params.

        @sealed("process", name="dedupe")
        def dedupe(st, src, dst):
            rows = st.input("raw", src).read_text().splitlines()
            st.output("clean", dst).write_text("\\n".join(dict.fromkeys(rows)))
    """

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> R:
            if sealing is None:
                svc = Sealing.from_env()
            elif isinstance(sealing, Sealing):
                svc = sealing
            else:
                svc = sealing()
            params = {k: v for k, v in kwargs.items() if isinstance(v, str | int | float | bool) or v is None}
            with Stage(kind, name=name or fn.__name__, sealing=svc, params=params, source=fn) as st:
                return fn(st, *args, **kwargs)

        return run

    return wrap


# --- helpers ---------------------------------------------------------------------------


def _checkpoint_ledger(ledger: object) -> CheckpointLedger:
    """The ledger as `checkpoint.CheckpointLedger`, or `ConfigurationError` (a ledger double
    without head, proofs and stored checkpoints cannot be checked against checkpoints)."""
    needed = ("head", "entry", "consistency_proof", "inclusion_proof", "checkpoints")
    missing = [m for m in needed if not callable(getattr(ledger, m, None))]
    if missing:
        raise ConfigurationError(
            f"the ledger {type(ledger).__name__} cannot be checked for rollback (no {', '.join(missing)}); "
            "use mlseal.ledger.open_ledger"
        )
    return ledger  # type: ignore[return-value]


def _check_param(key: str, value: Any, where: str) -> None:
    """A param and everything nested in it: no secret literal under any key (by name or by
    value), and no KFP placeholder the backend never resolved."""
    check_parameter(key, value, where=where)
    if isinstance(value, str) and UNRESOLVED_PLACEHOLDER in value:
        raise ConfigurationError(
            f"{where} is the unresolved KFP placeholder {value[:60]!r}: the backend resolves placeholders only "
            "in arguments a task passes, never in a parameter's default"
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_param(str(k), v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_param(key, v, f"{where}[{i}]")


def _sig_of(path: Path) -> Path:
    from mlseal.signing.artifact import default_bundle_path

    return default_bundle_path(path)


def _sha256_file(path: Path) -> Sha256Hex:
    from mlseal.signing.digest import file_sha256

    return Sha256Hex(file_sha256(path))


def _bound_elsewhere(reader: TrustedReader, seqs: tuple[int, ...], sha: str, bundle_sha: str) -> bool:
    """Another candidate producer, passing the TrustedReader checks, bound this bundle to `sha`."""
    for seq in seqs:
        try:
            rec = reader.record(seq)
        except VerificationError:
            continue
        if rec.status is Status.OK and any(o.sha256 == sha and o.bundle_sha256 == bundle_sha for o in rec.outputs):
            return True
    return False


def _bundle_file(path: Path, bundle: str | os.PathLike[str] | bytes | None) -> tuple[Path, Path | None]:
    if bundle is None:
        return _sig_of(path), None
    if isinstance(bundle, bytes):
        tmp = Path(tempfile.mkdtemp(prefix="mlseal-bundle-"))
        f = tmp / (path.name + ".sig")
        f.write_bytes(bundle)
        return f, tmp
    return Path(bundle), None


def _wrapped_version(wrapped: str) -> int | None:
    """`vault:v3:...` (Transit) or `dev:v1:...` -> 3 / 1."""
    parts = wrapped.split(":", 2)
    if len(parts) == 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, Path):
            v = str(v)
        out[k] = v
    return out


def with_run(sealing: Sealing, **run: str | None) -> Sealing:
    """A copy of `sealing` whose run info has the given fields set (others kept)."""
    current = sealing.run
    try:
        merged = RunInfo(
            pipeline=run.get("pipeline") or current.pipeline,
            run_id=run.get("run_id") or current.run_id,
            task=run.get("task") or current.task,
        )
    except RecordFormatError as exc:
        raise ConfigurationError(str(exc)) from None
    return replace(sealing, run=merged)

