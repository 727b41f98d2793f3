"""Artifact digests: sha256 of a file, and the OMS manifest digest of a directory.

A file's digest is the sha256 of its bytes. A directory's digest is the one an OpenSSF
Model Signing (OMS, `model-signing` 1.x "files" serialization) bundle names as its
in-toto subject: sha256 over the concatenated raw per-file sha256 digests, in the
order of the files' relative POSIX paths compared component by component (the order
`pathlib.PurePosixPath` sorts in, so ``a/z`` comes before ``a.txt``).

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
    >>> digest_path(d) == m.digest
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlseal.errors import ConfigurationError

#: Paths `model-signing` ignores by default (relative to the model root).
DEFAULT_IGNORED: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

_CHUNK = 1 << 20  # read() size for small files
_WINDOW = 16 << 20  # mmap window: at most two are mapped at once (bounded RSS)
_MMAP_MIN = 16 << 20  # below this a plain read loop is as fast
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14

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
    #: None: one resource per file ("files"); else files cut in shards of this size ("shards")
    shard_size: int | None = None

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


def _hash_read(fd: int, h: hashlib._Hash) -> None:
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := os.readv(fd, [buf]):
        h.update(view[:n])


def _populate(m: mmap.mmap) -> mmap.mmap:
    """Fault a window's pages in (on another core) before the hasher gets to it."""
    with contextlib.suppress(OSError, ValueError):  # older kernels: the hasher faults them in
        m.madvise(_MADV_POPULATE_READ)
    return m


def _hash_mmap(fd: int, size: int, h: hashlib._Hash, *, prefetch: bool) -> None:
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


def file_sha256(path: PathLike, *, prefetch: bool = True) -> str:
    """Hex sha256 of a file's bytes; memory stays bounded (two 16 MiB windows) at any size.

    `prefetch=False` keeps to one thread (used when files are hashed in parallel).
    """
    h = hashlib.sha256()
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
    """sha256 of a file's bytes, or a directory's OMS manifest (subject) digest.

    A directory ignores `.git` & co. and any extra `ignore` paths (e.g. a bundle
    written inside it); symbolic links are refused unless `allow_symlinks`.
    """
    p = Path(path)
    st = _check_kind(p, allow_symlinks)
    if stat.S_ISREG(st.st_mode):
        return file_sha256(p)
    return manifest_of(p, ignore=ignore, allow_symlinks=allow_symlinks).digest
