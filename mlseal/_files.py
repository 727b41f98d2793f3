"""Atomic file writes: a crash leaves the old file or the new one, never half of either.

Every artifact, bundle, model and key mlseal writes goes through `write_atomic`: the
bytes go to a uniquely named temporary file in the destination's directory, are flushed
to disk, and the file is renamed over the destination (`os.replace`, atomic on POSIX).
On any failure the temporary file is removed.

    >>> import tempfile
    >>> from pathlib import Path
    >>> dest = Path(tempfile.mkdtemp()) / "out.bin"
    >>> write_atomic(dest, b"payload", mode=0o600)
    True
    >>> dest.read_bytes(), oct(dest.stat().st_mode & 0o777)
    (b'payload', '0o600')
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_atomic(
    dest: str | os.PathLike[str], data: bytes, *, mode: int | None = None, replace: bool = True
) -> bool:
    """Write `data` to `dest` atomically (temp file, fsync, rename); True if written.

    `mode` sets the file's permission bits exactly (e.g. 0o600 for a private key);
    None creates it as `open()` would, subject to the umask. ``replace=False`` creates
    `dest` only if it does not exist yet (a hard link, atomic too) and returns False when
    another writer got there first, so that two processes creating the same key agree
    on one.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # 0o600 until chmod when a mode is given, so the bytes are never readable more widely
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, dest)
            return True
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree (a symlink itself, never what it points to); absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
