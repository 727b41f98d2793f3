"""Where a model's bytes come from: a storage URI read through fsspec, streamed and hashed.

Schemes (each through its maintained fsspec implementation, never a hand-written client):

- ``s3://bucket/key`` — s3fs (botocore credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  a web-identity token, instance roles; endpoint from ``AWS_ENDPOINT_URL``, or KServe's
  ``S3_ENDPOINT`` with ``S3_USE_HTTPS``);
- ``gs://bucket/key`` — gcsfs (``GOOGLE_APPLICATION_CREDENTIALS`` or workload identity);
- ``https://host/path`` (and ``http://``) — fsspec's HTTP filesystem (a single file);
- ``pvc://claim/path`` — the claim mounted where KServe mounts a source claim,
  ``/mnt/pvc`` (``MLSEAL_PVC_ROOT`` overrides), so ``pvc://models/m`` reads ``/mnt/pvc/m``;
- ``file:///path`` or an absolute path — the local filesystem.

Every file is hashed while it is downloaded (`download`): large files in ranged reads
with the next range in flight while the current one is hashed and written, small files
in concurrent batches. The bytes written are exactly the bytes hashed.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from mlseal import _progress
from mlseal._uris import redact_uri
from mlseal.errors import ConfigurationError, VerificationError

__all__ = [
    "BATCH_BYTES",
    "BATCH_FILES",
    "PVC_ROOT",
    "RANGE",
    "SMALL",
    "DownloadError",
    "Fetched",
    "RemoteFile",
    "Source",
    "download",
    "list_files",
    "parse_source",
    "read_small",
]

#: where KServe mounts a ``pvc://`` source claim in the storage initializer
PVC_ROOT = "/mnt/pvc"
#: a range read of a large file (one request)
RANGE = 16 << 20
#: files up to this size are fetched whole, in concurrent batches
SMALL = 8 << 20
#: a batch of small files: at most this many bytes and files in flight
BATCH_BYTES = 256 << 20
BATCH_FILES = 10_000

_SCHEMES = ("s3", "gs", "https", "http", "pvc", "file")


class DownloadError(VerificationError):
    """The storage could not deliver the model's bytes (missing, denied, unreachable,
    changed while it was read): nothing is published."""


@dataclass(frozen=True)
class Source:
    """A parsed storage URI: the fsspec filesystem, the path in it and how to show it."""

    uri: str
    scheme: str
    fs: Any
    path: str
    #: the URI without credentials or query string, for messages
    shown: str
    #: read files as one stream (no ranged reads: plain HTTP servers may not serve ranges)
    streamed: bool = False


@dataclass(frozen=True)
class RemoteFile:
    """One file of the model: its name relative to the model root ("." for a file model)."""

    name: str
    path: str
    size: int


@dataclass(frozen=True)
class Fetched:
    name: str
    local: Path
    sha256: str
    size: int
    #: the first bytes of the file (a single-file model must not begin with the directory tag)
    head: bytes


def _s3_options() -> dict[str, Any]:
    opts: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint and os.environ.get("S3_ENDPOINT"):  # what KServe's credential builder sets
        raw = os.environ["S3_ENDPOINT"]
        https = os.environ.get("S3_USE_HTTPS", "1") not in ("0", "false", "False")
        endpoint = raw if "://" in raw else f"{'https' if https else 'http'}://{raw}"
    client: dict[str, Any] = {}
    if endpoint:
        client["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if client:
        opts["client_kwargs"] = client
    return opts


def _filesystem(protocol: str, **options: Any) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as exc:
        raise ConfigurationError(
            f"reading {protocol}:// URIs needs the {exc.name or 'fsspec'} package, which is not installed"
        ) from None


def _check_relative(path: str, uri: str) -> None:
    if any(part in ("..",) for part in PurePosixPath(path).parts):
        raise ConfigurationError(
            f"storage URI {redact_uri(uri)!r} holds a '..' path component; name the model directly"
        )


def parse_source(uri: str, *, pvc_root: str | None = None) -> Source:
    """Parse SRC and open its filesystem; `ConfigurationError` names what is wrong."""
    if not uri or uri != uri.strip():
        raise ConfigurationError("SRC must be the model's storage URI (s3://, gs://, https://, pvc:// or file://)")
    if uri.startswith("/"):
        uri = "file://" + uri
    try:
        p = urlsplit(uri)
    except ValueError:
        raise ConfigurationError("SRC is not a parseable storage URI") from None
    scheme = p.scheme.lower()
    shown = redact_uri(uri)
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"storage URI {shown!r}: scheme {scheme or '(none)'!r} is not supported; "
            f"use one of {', '.join(s + '://' for s in _SCHEMES)}"
        )
    if "@" in p.netloc:
        raise ConfigurationError(
            f"storage URI {shown!r} carries credentials in its user info; pass them through the environment "
            "(a Secret), never in the URI, which is visible in the pod spec"
        )
    _check_relative(p.path, uri)
    if scheme == "s3":
        if not p.netloc or p.query:
            raise ConfigurationError(f"storage URI {shown!r} must look like s3://bucket/key (no query string)")
        return Source(uri, scheme, _filesystem("s3", **_s3_options()), f"{p.netloc}{p.path}".rstrip("/"), shown)
    if scheme == "gs":
        if not p.netloc or p.query:
            raise ConfigurationError(f"storage URI {shown!r} must look like gs://bucket/object (no query string)")
        fs = _filesystem("gcs", skip_instance_cache=True)
        return Source(uri, scheme, fs, f"{p.netloc}{p.path}".rstrip("/"), shown)
    if scheme in ("http", "https"):
        if not p.netloc:
            raise ConfigurationError(f"storage URI {shown!r} names no host")
        fs = _filesystem("http", skip_instance_cache=True)
        return Source(uri, scheme, fs, uri, shown, streamed=True)
    if scheme == "pvc":
        claim = p.netloc
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", claim or ""):
            raise ConfigurationError(f"storage URI {shown!r} must look like pvc://claim-name/path")
        root = pvc_root or os.environ.get("MLSEAL_PVC_ROOT") or PVC_ROOT
        local = os.path.join(root, p.path.lstrip("/")).rstrip("/")
        return Source(uri, scheme, _filesystem("file"), local, shown)
    # file
    if p.netloc not in ("", "localhost") or not p.path.startswith("/"):
        raise ConfigurationError(f"storage URI {shown!r} must be file:///absolute/path")
    return Source(uri, scheme, _filesystem("file"), p.path.rstrip("/") or "/", shown)


def _storage_error(src: Source, what: str, exc: BaseException) -> DownloadError:
    if isinstance(exc, FileNotFoundError):
        why = "not found"
    elif isinstance(exc, PermissionError):
        why = "access denied (check the storage credentials this pod is given)"
    else:
        why = f"{type(exc).__name__}: {exc}"
    return DownloadError(f"cannot read {what} from {src.shown!r}: {why}")


def list_files(src: Source) -> tuple[bool, list[RemoteFile]]:
    """(is_directory, files) of the model at `src`; a file model is one file named ".".

    Symbolic links on a local filesystem are listed with their kind so the caller can
    refuse them; empty directories carry no file and are not listed (as in OMS).
    """
    fs = src.fs
    root = src.path.rstrip("/")
    try:
        if src.streamed:  # HTTP: one file, its size from the server
            info = fs.info(src.path)
            return False, [RemoteFile(".", src.path, int(info.get("size") or -1))]
        found = fs.find(src.path, detail=True, withdirs=False)
        if not found:
            raise FileNotFoundError(src.path)
        if list(found) in ([root], [src.path]):  # SRC is a file
            info = fs.info(src.path)
            if info.get("type") == "directory":
                raise FileNotFoundError(src.path)
            _refuse_link(src, info, ".")
            return False, [RemoteFile(".", src.path, int(info["size"]))]
    except VerificationError:
        raise
    except Exception as exc:  # OSError, or botocore/aiohttp errors that fsspec does not translate
        raise _storage_error(src, "the model", exc) from None
    out = []
    for path, info in sorted(found.items()):
        if info.get("type") == "directory":
            _refuse_link(src, info, path)
            continue
        norm = path.rstrip("/")
        if not norm.startswith(root + "/"):
            raise DownloadError(f"{src.shown!r}: the storage listed {norm!r}, outside the model")
        rel = norm[len(root) + 1:]
        _check_name(src, rel)
        _refuse_link(src, info, rel)
        out.append(RemoteFile(rel, path, int(info.get("size") or 0)))
    return True, out


def _check_name(src: Source, rel: str) -> None:
    """A listed name must be a plain relative path: it becomes a path under the staging
    directory before the signature is checked, so '..' or an absolute name would escape it."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\x00" in rel or "\\" in rel:
        raise VerificationError(
            f"{src.shown!r}: the storage lists an object named {rel[:120]!r}, which is not a plain relative path "
            "('..', '.', empty or backslash parts); a model never holds one, so nothing is downloaded"
        )


def _refuse_link(src: Source, info: dict[str, Any], name: str) -> None:
    if info.get("islink"):
        raise VerificationError(
            f"{src.shown!r}: {name} is a symbolic link; a model is made of regular files (OMS refuses links)"
        )


def read_small(src: Source, path: str, limit: int) -> bytes:
    """One whole object of at most `limit` bytes (a bundle)."""
    try:
        if src.streamed:
            with src.fs.open(path, "rb", block_size=0) as f:
                data: bytes = f.read(limit + 1)
        else:  # one bounded read, no separate size request
            data = src.fs.cat_file(path, start=0, end=limit + 1)
    except Exception as exc:
        raise _storage_error(src, "the signature bundle", exc) from None
    if len(data) > limit:
        raise DownloadError(f"the signature bundle at {src.shown!r} is larger than {limit} bytes")
    return data


class _Writer:
    """Hash-and-write of one file: what is written is exactly what is hashed."""

    def __init__(self, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.local = local
        self.fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.h = hashlib.sha256()
        self.size = 0
        self.head = b""

    def add(self, data: bytes) -> None:
        self.h.update(data)
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        _progress.advance(len(data), "bytes")

    def close(self, name: str) -> Fetched:
        os.close(self.fd)
        self.fd = -1
        return Fetched(name, self.local, self.h.hexdigest(), self.size, self.head)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadError("download stopped: the model was refused")


def _fetch_ranged(src: Source, f: RemoteFile, local: Path, pool: ThreadPoolExecutor,
                  cancel: threading.Event | None) -> Fetched:
    """A large file in `RANGE` reads, the next one in flight while this one is hashed."""
    w = _Writer(local)
    try:
        starts = list(range(0, f.size, RANGE))
        pending: list[Future[bytes]] = []

        def submit(i: int) -> None:
            s = starts[i]
            pending.append(pool.submit(src.fs.cat_file, f.path, start=s, end=min(s + RANGE, f.size)))

        for i in range(min(2, len(starts))):
            submit(i)
        for i, s in enumerate(starts):
            _check_cancel(cancel)
            data = pending.pop(0).result()
            if i + 2 < len(starts):
                submit(i + 2)
            if len(data) != min(RANGE, f.size - s):
                raise DownloadError(f"{_shown_file(src, f)} changed while it was downloaded (short read at byte {s})")
            w.add(data)
        return w.close(f.name)
    except BaseException:
        w.abort()
        raise


async def _read_chunk(af: Any, n: int) -> bytes:
    """Up to `n` bytes from an async streamed file (fewer only at the end)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        b = await af.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _fetch_async_stream(src: Source, f: RemoteFile, local: Path, pool: ThreadPoolExecutor,
                        cancel: threading.Event | None) -> Fetched | None:
    """A large file as ONE streamed request (fsspec ``open_async``: s3fs streams a single
    GET), read on the filesystem's event loop by a helper thread while this one hashes
    and writes the previous chunk. None when the filesystem cannot stream (use ranges)."""
    from fsspec.asyn import sync

    fs = src.fs
    if not getattr(fs, "async_impl", False):
        return None
    try:
        af = sync(fs.loop, fs.open_async, f.path, "rb")
    except NotImplementedError:
        return None
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=3)
    stop = threading.Event()

    def put(item: bytes | BaseException) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = sync(fs.loop, _read_chunk, af, RANGE)
                if not put(chunk) or not chunk:
                    return
        except BaseException as exc:  # handed to the hashing thread, which raises it
            put(exc)

    done = pool.submit(reader)
    w = _Writer(local)
    try:
        while True:
            _check_cancel(cancel)
            item = chunks.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                break
            w.add(item)
            if w.size > f.size:
                break
        if w.size != f.size:
            raise DownloadError(f"{_shown_file(src, f)} changed while it was downloaded (size {w.size}, "
                                f"listed {f.size})")
        return w.close(f.name)
    except BaseException:
        w.abort()
        raise
    finally:
        stop.set()
        done.result()


def _fetch_streamed(src: Source, f: RemoteFile, local: Path, cancel: threading.Event | None) -> Fetched:
    w = _Writer(local)
    try:
        with src.fs.open(f.path, "rb", block_size=0) as r:
            while chunk := r.read(RANGE):
                _check_cancel(cancel)
                w.add(chunk)
        return w.close(f.name)
    except BaseException:
        w.abort()
        raise


def _shown_file(src: Source, f: RemoteFile) -> str:
    return repr(src.shown if f.name == "." else f"{src.shown.rstrip('/')}/{f.name}")


def _batches(files: Sequence[RemoteFile]) -> Iterator[list[RemoteFile]]:
    batch: list[RemoteFile] = []
    size = 0
    for f in files:
        if batch and (size + f.size > BATCH_BYTES or len(batch) >= BATCH_FILES):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield batch


def _hash_landed(src: Source, f: RemoteFile, local: Path) -> Fetched:
    """Hash a small file fsspec just wrote into the private staging directory (no other
    writer can reach it); the size must be the listed one."""
    h = hashlib.sha256()
    try:
        with open(local, "rb", buffering=0) as r:
            data = r.read()
    except OSError as exc:
        raise DownloadError(f"{_shown_file(src, f)} was not downloaded: {exc.strerror or exc}") from None
    if len(data) != f.size:
        raise DownloadError(
            f"{_shown_file(src, f)} changed while it was downloaded (size {len(data)}, listed {f.size})"
        )
    h.update(data)
    _progress.advance(len(data), "bytes")
    return Fetched(f.name, local, h.hexdigest(), len(data), data[:64])


def download(src: Source, files: Sequence[RemoteFile], target: Callable[[RemoteFile], Path],
             cancel: threading.Event | None = None) -> list[Fetched]:
    """Download and hash every file into ``target(file)``; raise `DownloadError` on any
    failure, or as soon as `cancel` is set.

    Large files: ranged reads hashed as they arrive, the next range in flight. Small
    files: concurrent batches through fsspec's own ``get`` (one request per file, as a
    plain download), each batch hashed while the next one downloads.
    """
    out: list[Fetched] = []
    _progress.expect(sum(max(f.size, 0) for f in files), "bytes")
    try:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlseal-fetch") as pool:
            if src.streamed:
                return [_fetch_streamed(src, f, target(f), cancel) for f in files]
            small = [f for f in files if f.size <= SMALL]
            large = [f for f in files if f.size > SMALL]
            batches = list(_batches(small))

            def get(batch: list[RemoteFile]) -> None:
                locals_ = [target(f) for f in batch]
                for lp in {p.parent for p in locals_}:
                    lp.mkdir(parents=True, exist_ok=True)
                src.fs.get([f.path for f in batch], [str(p) for p in locals_])

            nxt: Future[None] | None = pool.submit(get, batches[0]) if batches else None
            for i, batch in enumerate(batches):
                _check_cancel(cancel)
                assert nxt is not None
                nxt.result()
                nxt = pool.submit(get, batches[i + 1]) if i + 1 < len(batches) else None
                out.extend(_hash_landed(src, f, target(f)) for f in batch)
            for f in large:
                got = _fetch_async_stream(src, f, target(f), pool, cancel)
                out.append(got if got is not None else _fetch_ranged(src, f, target(f), pool, cancel))
    except (DownloadError, VerificationError, ConfigurationError):
        raise
    except Exception as exc:
        raise _storage_error(src, "the model", exc) from None
    return out
