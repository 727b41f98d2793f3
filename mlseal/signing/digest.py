"""Artifact digests: sha256 of a file, and the OMS manifest digest of a directory.

A file's digest is the sha256 of its bytes. A directory's digest is the one an OpenSSF
Model Signing (OMS, `model-signing` 1.x "files" serialization) bundle names as its
in-toto subject: sha256 over the concatenated raw per-file sha256 digests, in the
order of the files' relative POSIX paths compared component by component (the order
`pathlib.PurePosixPath` sorts in, so ``a/z`` comes before ``a.txt``).

Files are read in large chunks into a few reused buffers (memory stays bounded whatever
the size); a reader thread fills the next buffer while `hashlib` (which releases the GIL)
hashes the current one, and a directory's files are hashed in parallel across cores.
This module imports only the standard library, so that `mlseal digest` starts fast.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "weights.bin").write_bytes(b"abc")
    >>> file_sha256(d / "weights.bin")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    >>> m = manifest_of(d)
    >>> [(r.name, r.sha256[:8]) for r in m.resources]
    [('weights.bin', 'ba7816bf')]
    >>> digest_path(d) == m.digest
    True
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlseal.errors import ConfigurationError

#: Paths `model-signing` ignores by default (relative to the model root).
DEFAULT_IGNORED: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

_CHUNK = 2 << 20  # 2 MiB: large enough that per-call overhead vanishes
_BUFFERS = 4  # 8 MiB in flight at most per file
_THREADED_MIN = 16 << 20  # below this the reader thread costs more than it saves

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Resource:
    """One file of a model: its path relative to the root (POSIX) and its sha256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a directory (or file) model consists of, as OMS serialises it.

    `digest` is the in-toto subject digest of an OMS bundle for this model.
    """

    name: str
    resources: tuple[Resource, ...]
    ignore_paths: tuple[str, ...]
    allow_symlinks: bool

    @property
    def digest(self) -> str:
        return subject_digest(self.resources)


def subject_digest(resources: Iterable[Resource]) -> str:
    """sha256 over the raw per-resource digests, in manifest order (OMS v1.0)."""
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r.sha256))
    return h.hexdigest()


def sort_key(name: str) -> tuple[str, ...]:
    """Manifest order: path components compared one by one (PurePosixPath order)."""
    return PurePosixPath(name).parts


def _read_error(path: PathLike, exc: OSError) -> ConfigurationError:
    return ConfigurationError(f"cannot read {path}: {exc.strerror or exc}")


def _hash_simple(f: object, h: hashlib._Hash) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    readinto = f.readinto  # type: ignore[attr-defined]
    while n := readinto(buf):
        h.update(view[:n])


def _hash_pipelined(f: object, h: hashlib._Hash) -> None:
    """A reader thread fills buffers while this thread hashes; both release the GIL."""
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(_BUFFERS):
        free.put(bytearray(_CHUNK))
    readinto = f.readinto  # type: ignore[attr-defined]
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                b = free.get()
                n = readinto(b)
                full.put((b, n))
                if not n:
                    return
        except BaseException as exc:  # handed to the hashing thread, re-raised there
            full.put(exc)

    t = threading.Thread(target=reader, name="mlseal-digest-reader", daemon=True)
    t.start()
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            b, n = item
            if not n:
                break
            h.update(memoryview(b)[:n])
            free.put(b)
    finally:
        stop.set()
        free.put(bytearray(0))  # unblock a reader waiting for a buffer
        t.join()


def file_sha256(path: PathLike, *, pipelined: bool = True) -> str:
    """Hex sha256 of a file's bytes; memory stays bounded (a few MiB) at any size."""
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if pipelined and size >= _THREADED_MIN:
                _hash_pipelined(f, h)
            else:
                _hash_simple(f, h)
    except OSError as exc:
        raise _read_error(path, exc) from None
    return h.hexdigest()


def _is_ignored(rel: PurePosixPath, ignored: Sequence[PurePosixPath]) -> bool:
    return any(rel == p or rel.is_relative_to(p) for p in ignored)


def _check_kind(path: Path, allow_symlinks: bool) -> os.stat_result:
    try:
        st = path.lstat()
    except OSError as exc:
        raise _read_error(path, exc) from None
    if stat.S_ISLNK(st.st_mode):
        if not allow_symlinks:
            raise ConfigurationError(
                f"{path} is a symbolic link; refusing to follow it (allow symlinks explicitly to include it)"
            )
        try:
            st = path.stat()
        except OSError as exc:
            raise ConfigurationError(f"{path} is a broken symbolic link: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ConfigurationError(f"{path} is neither a regular file nor a directory")
    return st


def list_files(
    root: Path, *, ignore: Sequence[str] = (), allow_symlinks: bool = False
) -> list[tuple[str, Path]]:
    """The model's files as (relative POSIX name, path), ignored paths pruned."""
    ignored = [PurePosixPath(p) for p in (*ignore, *DEFAULT_IGNORED)]
    out: list[tuple[str, Path]] = []

    def onerror(exc: OSError) -> None:
        raise _read_error(exc.filename, exc)

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=allow_symlinks):
        base = Path(dirpath)
        rel_base = PurePosixPath(base.relative_to(root).as_posix())
        keep = []
        for d in dirnames:
            rel = rel_base / d
            if _is_ignored(rel, ignored):
                continue
            _check_kind(base / d, allow_symlinks)
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            rel = rel_base / name
            if _is_ignored(rel, ignored):
                continue
            st = _check_kind(base / name, allow_symlinks)
            if stat.S_ISREG(st.st_mode):
                out.append((rel.as_posix(), base / name))
    return out


def manifest_of(
    path: PathLike,
    *,
    ignore: Sequence[str] = (),
    allow_symlinks: bool = False,
    workers: int | None = None,
) -> Manifest:
    """The OMS manifest of a file or directory model (per-file digests, in parallel).

    `ignore` names paths relative to the model root (a directory ignores its subtree),
    on top of `DEFAULT_IGNORED`. A single file is one resource named ``.``.
    """
    root = Path(path)
    st = _check_kind(root, allow_symlinks)
    name = root.name or Path(os.path.abspath(root)).name
    ignore_paths = tuple(dict.fromkeys((*ignore, *DEFAULT_IGNORED)))
    if stat.S_ISREG(st.st_mode):
        res: tuple[Resource, ...] = (Resource(".", file_sha256(root)),)
        return Manifest(name, res, ignore_paths, allow_symlinks)
    files = list_files(root, ignore=ignore, allow_symlinks=allow_symlinks)
    # biggest first, so that a large file does not start last and run alone
    files.sort(key=lambda f: -_size(f[1]))
    n = workers or os.cpu_count() or 1
    if n == 1 or len(files) <= 1:
        digests = [file_sha256(p, pipelined=len(files) <= 1) for _, p in files]
    else:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mlseal-digest") as pool:
            digests = list(pool.map(lambda f: file_sha256(f[1], pipelined=False), files))
    resources = sorted(
        (Resource(rel, d) for (rel, _), d in zip(files, digests, strict=True)),
        key=lambda r: sort_key(r.name),
    )
    return Manifest(name, tuple(resources), ignore_paths, allow_symlinks)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def digest_path(path: PathLike, *, ignore: Sequence[str] = (), allow_symlinks: bool = False) -> str:
    """sha256 of a file's bytes, or a directory's OMS manifest (subject) digest.

    A directory ignores `.git` & co. and any extra `ignore` paths (e.g. a bundle
    written inside it); symbolic links are refused unless `allow_symlinks`.
    """
    p = Path(path)
    st = _check_kind(p, allow_symlinks)
    if stat.S_ISREG(st.st_mode):
        return file_sha256(p)
    return manifest_of(p, ignore=ignore, allow_symlinks=allow_symlinks).digest
