"""Artifact digests: sha256 of a file, and the name-binding digest of a directory.

A file's digest is the sha256 of its bytes. A directory's digest is the sha256 of its
*directory manifest*: a tag, then one entry per file: its kind, its relative POSIX path
and its sha256, in the order of the paths compared component by component (the order
`pathlib.PurePosixPath` sorts in, so ``a/z`` comes before ``a.txt``; it is also the
order of the files in the directory's OpenSSF Model Signing (OMS) bundle):

    manifest = DIRECTORY_TAG || entry*
    entry    = b"f" || uint32_be(len(path)) || path (UTF-8) || sha256(file) (32 raw bytes)

so renaming, moving or swapping files, adding an empty one, or turning a file into a
directory changes the digest. No file can have a directory's digest: a file whose
bytes begin with `DIRECTORY_TAG` is refused (`VerificationError`), so the only way to
make sha256(file) equal a directory digest is a SHA-256 collision. (The OMS *subject*
digest, sha256 over the concatenated per-file digests, binds no names; an OMS bundle
binds them through its file list, which `mlseal.signing.artifact` checks. A ledger record
holds a bare digest, hence this one; `Manifest.subject_digest` keeps the OMS value.)

Large files are hashed through 16 MiB mmap windows (no copy; memory stays bounded
whatever the size) while a helper thread faults in the next window, and `hashlib`
releases the GIL; a directory's files are hashed in parallel across cores.
This module imports only the standard library, so that `mlseal digest` starts fast.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "weights.bin").write_bytes(b"abc")
    >>> file_sha256(d / "weights.bin")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    >>> m = manifest_of(d)
    >>> [(r.name, r.sha256[:8]) for r in m.resources]
    [('weights.bin', 'ba7816bf')]
    >>> digest_path(d) == m.artifact_digest == directory_digest(m.resources)
    True
    >>> digest_path(d / "weights.bin") == file_sha256(d / "weights.bin")
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from mlseal import _progress
from mlseal.errors import ConfigurationError, VerificationError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_IGNORED",
    "DIRECTORY_TAG",
    "KIND_FILE",
    "Manifest",
    "PathLike",
    "Resource",
    "digest_path",
    "directory_digest",
    "directory_manifest_bytes",
    "file_artifact_digest",
    "file_sha256",
    "list_files",
    "manifest_of",
    "range_sha256",
    "shard_sort_key",
    "sort_key",
    "subject_digest",
]

#: Paths `model-signing` ignores by default (relative to the model root).
DEFAULT_IGNORED: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

_CHUNK = 1 << 20  # read() size for small files
_WINDOW = 16 << 20  # mmap window: at most two are mapped at once (bounded RSS)
_MMAP_MIN = 16 << 20  # below this a plain read loop is as fast
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14

#: Starts every directory manifest. A file whose bytes begin with it has no artifact
#: digest (refused), so that no file can pass for a directory: domain separation for a
#: scheme in which a file's digest must stay the plain sha256 of its bytes.
DIRECTORY_TAG = b"\x00mlseal.dev/directory-manifest/v1\x00"
#: The kind of a manifest entry: a regular file (the only kind a model is made of; an
#: empty directory is no part of a model, as in OMS, and symbolic links are refused or,
#: when allowed, followed and hashed as the file they point to).
KIND_FILE = b"f"

_HEX64 = re.compile(r"[0-9a-f]{64}")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Resource:
    """One file of a model: its path relative to the root (POSIX) and its sha256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a directory (or file) model consists of, as OMS serialises it.

    `artifact_digest` is what the ledger records and `digest_path` returns;
    `subject_digest` is the in-toto subject digest of an OMS bundle for this model.
    A single file is one resource named ``.``.
    """

    name: str
    resources: tuple[Resource, ...]
    ignore_paths: tuple[str, ...]
    allow_symlinks: bool
    #: None: one resource per file ("files"); else files cut in shards of this size ("shards")
    shard_size: int | None = None

    @property
    def subject_digest(self) -> str:
        """The OMS in-toto subject digest (binds no names: see the module docstring)."""
        return subject_digest(self.resources)

    @property
    def is_file(self) -> bool:
        """A single-file model (one resource named ``.``), "files" serialization."""
        return self.shard_size is None and [r.name for r in self.resources] == ["."]

    @property
    def artifact_digest(self) -> str:
        """The digest the ledger records: a file's sha256, or the directory digest."""
        if self.shard_size is not None:
            raise ConfigurationError(
                f"model {self.name!r}: a manifest in the 'shards' serialization has no artifact digest "
                "(the per-file digests are not in it); digest the model with one digest per file"
            )
        if self.is_file:
            return self.resources[0].sha256
        return directory_digest(self.resources)


def subject_digest(resources: Iterable[Resource]) -> str:
    """sha256 over the raw per-resource digests, in manifest order (OMS v1.0)."""
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r.sha256))
    return h.hexdigest()


def _check_entry_name(name: str) -> bytes:
    """The UTF-8 bytes of a normalised relative POSIX path; refuse anything else."""
    why = None
    if name in ("", ".") or name.startswith("/") or "\x00" in name:
        why = "it is empty, '.', absolute or holds a NUL byte"
    elif str(PurePosixPath(name)) != name or ".." in name.split("/"):
        why = "it is not a normalised relative path ('/'-separated, no '.', '..' or empty parts)"
    else:
        try:
            return name.encode("utf-8")
        except UnicodeEncodeError:
            why = "it is not valid UTF-8"
    raise ConfigurationError(f"file {name!r} cannot be named in a directory manifest: {why}")


def _manifest_chunks(resources: Iterable[Resource]) -> Iterator[bytes]:
    entries = sorted(((_check_entry_name(r.name), r) for r in resources), key=lambda e: sort_key(e[1].name))
    yield DIRECTORY_TAG
    prev = None
    for raw, r in entries:
        if r.name == prev:
            raise ConfigurationError(f"file {r.name!r} is listed twice in a directory manifest")
        prev = r.name
        if not _HEX64.fullmatch(r.sha256):
            raise ConfigurationError(f"file {r.name!r}: digest {r.sha256!r:.80} is not 64 lowercase hex digits")
        yield KIND_FILE + len(raw).to_bytes(4, "big") + raw + bytes.fromhex(r.sha256)


def directory_manifest_bytes(resources: Iterable[Resource]) -> bytes:
    """The canonical manifest of a directory's files (the module docstring has the format).

    Resources may come in any order (they are sorted); names must be normalised relative
    POSIX paths in UTF-8, each listed once, with sha256 digests.
    """
    return b"".join(_manifest_chunks(resources))


def directory_digest(resources: Iterable[Resource]) -> str:
    """Hex sha256 of `directory_manifest_bytes` (what the ledger records for a directory).

    It can be computed from an OMS "files" bundle's resources (names and digests) too.
    """
    h = hashlib.sha256()
    for chunk in _manifest_chunks(resources):
        h.update(chunk)
    return h.hexdigest()


def sort_key(name: str) -> tuple[str, ...]:
    """Manifest order: path components compared one by one (PurePosixPath order)."""
    return PurePosixPath(name).parts


def shard_sort_key(name: str) -> tuple[tuple[str, ...], int, int]:
    """Order of "path:start:end" shard resources: by path, then offsets as numbers."""
    path, start, end = name.rsplit(":", 2)
    return PurePosixPath(path).parts, int(start), int(end)


def range_sha256(path: PathLike, start: int, end: int) -> str:
    """Hex sha256 of bytes [start, end) of a file (one shard)."""
    h = hashlib.sha256()
    buf = bytearray(min(_CHUNK, max(end - start, 1)))
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            left = end - start
            while left > 0:
                n = f.readinto(view[: min(len(buf), left)])
                if not n:
                    raise ConfigurationError(f"{path} shrank while it was hashed (wanted bytes up to {end})")
                h.update(view[:n])
                left -= n
    except OSError as exc:
        raise _read_error(path, exc) from None
    return h.hexdigest()


def _read_error(path: PathLike, exc: OSError) -> ConfigurationError:
    return ConfigurationError(f"cannot read {path}: {exc.strerror or exc}")


class _Sink(Protocol):
    def update(self, data: ReadableBuffer, /) -> None: ...


class _HeadKeeper:
    """Feeds a hash and keeps a copy of the first `n` bytes it hashed, so that a check
    on the head looks at exactly the bytes that went into the digest (even through a
    shared mapping another process may write to)."""

    def __init__(self, h: _Sink, n: int) -> None:
        self._h = h
        self._n = n
        self.head = b""

    def update(self, data: ReadableBuffer, /) -> None:
        want = self._n - len(self.head)
        if want <= 0:
            self._h.update(data)
            return
        with memoryview(data) as view, view.cast("B") as flat:
            take = bytes(flat[:want])
            self.head += take
            self._h.update(take)
            self._h.update(flat[len(take):])


def _hash_read(fd: int, h: _Sink) -> None:
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        h.update(view[:n])
        _progress.advance(n, "bytes")


def _populate(m: mmap.mmap) -> mmap.mmap:
    """Fault a window's pages in (on another core) before the hasher gets to it."""
    with contextlib.suppress(OSError, ValueError):  # older kernels: the hasher faults them in
        m.madvise(_MADV_POPULATE_READ)
    return m


def _hash_mmap(fd: int, size: int, h: _Sink, *, prefetch: bool) -> None:
    """Hash the file through mmap windows: no copy into user buffers, and `hashlib`
    releases the GIL while it hashes a window. With `prefetch`, a helper thread maps
    and faults in the next window while this one is hashed (one large file on 2 cores).
    A file truncated by someone else while it is hashed raises SIGBUS (as with any
    mmap reader, `model-signing`'s BLAKE3 hasher included)."""

    def window(off: int) -> mmap.mmap:
        return mmap.mmap(fd, min(_WINDOW, size - off), offset=off, access=mmap.ACCESS_READ)

    if not prefetch:
        for off in range(0, size, _WINDOW):
            with window(off) as m:
                h.update(m)
                _progress.advance(len(m), "bytes")
        return
    from concurrent.futures import ThreadPoolExecutor  # (here: only big files pay for its import)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlseal-prefetch") as pool:
        nxt = pool.submit(lambda: _populate(window(0)))
        for off in range(0, size, _WINDOW):
            m = nxt.result()
            if off + _WINDOW < size:
                nxt = pool.submit(lambda o=off + _WINDOW: _populate(window(o)))  # type: ignore[misc]
            with m:
                h.update(m)
                _progress.advance(len(m), "bytes")


def _hash_file(path: PathLike, h: _Sink, *, prefetch: bool) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _read_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size >= _MMAP_MIN:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            _hash_mmap(fd, st.st_size, h, prefetch=prefetch)
        else:
            _hash_read(fd, h)
    except OSError as exc:
        raise _read_error(path, exc) from None
    finally:
        os.close(fd)


def file_sha256(path: PathLike, *, prefetch: bool = True) -> str:
    """Hex sha256 of a file's bytes; memory stays bounded (two 16 MiB windows) at any size.

    `prefetch=False` keeps to one thread (used when files are hashed in parallel).
    This is a file's digest as part of a directory; `file_artifact_digest` is the
    digest of a file that stands alone as an artifact.
    """
    h = hashlib.sha256()
    _hash_file(path, h, prefetch=prefetch)
    return h.hexdigest()


def file_artifact_digest(path: PathLike, *, prefetch: bool = True) -> str:
    """The digest of a single-file artifact: the sha256 of its bytes, as `file_sha256`.

    A file whose bytes begin with `DIRECTORY_TAG` is refused with `VerificationError`:
    its sha256 could be a directory's digest (it could hold a directory's manifest).
    """
    h = hashlib.sha256()
    keeper = _HeadKeeper(h, len(DIRECTORY_TAG))
    _hash_file(path, keeper, prefetch=prefetch)
    if keeper.head == DIRECTORY_TAG:
        raise VerificationError(
            f"{path} begins with mlseal's directory manifest tag, so its sha256 could stand for a "
            "directory's digest; a file carrying the tag is never a model or dataset (is it a directory "
            "replaced by its manifest?); use the original artifact"
        )
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


def _check_utf8(rel: str, path: Path) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{os.fsencode(path)!r}: the file name is not valid UTF-8, so neither a directory digest nor an "
            "OMS bundle can name it; rename the file"
        ) from None


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
                _check_utf8(rel.as_posix(), base / name)
                out.append((rel.as_posix(), base / name))
    return out


def manifest_of(
    path: PathLike,
    *,
    ignore: Sequence[str] = (),
    allow_symlinks: bool = False,
    workers: int | None = None,
    shard_size: int | None = None,
) -> Manifest:
    """The OMS manifest of a file or directory model (per-file digests, in parallel).

    `ignore` names paths relative to the model root (a directory ignores its subtree),
    on top of `DEFAULT_IGNORED`. A single file is one resource named ``.``. With
    `shard_size`, files are cut into shards named ``path:start:end`` (the `model-signing`
    "shards" serialization; empty files then have no resource).
    """
    root = Path(path)
    st = _check_kind(root, allow_symlinks)
    name = root.name or Path(os.path.abspath(root)).name
    ignore_paths = tuple(dict.fromkeys((*ignore, *DEFAULT_IGNORED)))
    if stat.S_ISREG(st.st_mode):
        files = [(".", root)]
    else:
        files = list_files(root, ignore=ignore, allow_symlinks=allow_symlinks)
    if shard_size is not None:
        return Manifest(name, _shards(files, shard_size, workers), ignore_paths, allow_symlinks, shard_size)
    if files == [(".", root)]:  # a single-file artifact: its digest is the artifact digest
        return Manifest(name, (Resource(".", file_artifact_digest(root)),), ignore_paths, allow_symlinks)
    # biggest first, so that a large file does not start last and run alone
    files.sort(key=lambda f: -_size(f[1]))
    n = workers or os.cpu_count() or 1
    if n == 1 or len(files) <= 1:
        digests = [file_sha256(p, prefetch=len(files) <= 1) for _, p in files]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mlseal-digest") as pool:
            digests = list(pool.map(lambda f: file_sha256(f[1], prefetch=False), files))
    resources = sorted(
        (Resource(rel, d) for (rel, _), d in zip(files, digests, strict=True)),
        key=lambda r: sort_key(r.name),
    )
    return Manifest(name, tuple(resources), ignore_paths, allow_symlinks)


def _shards(files: list[tuple[str, Path]], shard_size: int, workers: int | None) -> tuple[Resource, ...]:
    if shard_size <= 0:
        raise ConfigurationError(f"shard size must be positive, got {shard_size}")
    tasks = [
        (f"{rel}:{start}:{min(start + shard_size, size)}", p, start, min(start + shard_size, size))
        for rel, p in files
        for size in (_size(p),)
        for start in range(0, size, shard_size)
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="mlseal-digest") as pool:
        digests = list(pool.map(lambda t: range_sha256(t[1], t[2], t[3]), tasks))
    out = [Resource(t[0], d) for t, d in zip(tasks, digests, strict=True)]
    return tuple(sorted(out, key=lambda r: shard_sort_key(r.name)))


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def digest_path(path: PathLike, *, ignore: Sequence[str] = (), allow_symlinks: bool = False) -> str:
    """An artifact's digest, as the ledger records it: the sha256 of a file's bytes
    (`file_artifact_digest`), or a directory's name-binding digest (`directory_digest`).

    A directory ignores `.git` & co. and any extra `ignore` paths (e.g. a bundle
    written inside it); symbolic links are refused unless `allow_symlinks`. A file
    that begins with `DIRECTORY_TAG` raises `VerificationError`.
    """
    p = Path(path)
    st = _check_kind(p, allow_symlinks)
    if stat.S_ISREG(st.st_mode):
        return file_artifact_digest(p)
    return manifest_of(p, ignore=ignore, allow_symlinks=allow_symlinks).artifact_digest
