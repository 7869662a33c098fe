"""Crash-safe file writes and installed-package versions: the small I/O every part of fedrec shares.

Atomic writes. A ledger is the only record of privacy already spent: if a crash left it truncated or
half-written, a resumed run would under-count epsilon. A run directory's checkpoint, a device's state and the
signing keys have the same problem. So every write goes to a temporary file in the same folder, is flushed and
fsync'ed, and then atomically replaces the old file with `os.replace`; the folder is fsync'ed too (POSIX), so
the rename itself survives a power loss. A reader therefore sees either the old file or the new one, never a
mix.

Package versions. Reports, run directories and accountants record which library versions produced a figure;
a package that is not installed is recorded as "not installed" rather than failing the write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from importlib import metadata
from pathlib import Path

NOT_INSTALLED = "not installed"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically and durably, with permission bits `mode` from the first byte on.

    The temporary file is created with `mode` (not chmod-ed afterwards), so a private key is never readable by
    others, not even for an instant.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """`atomic_write_bytes` of `text` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable. Not possible on every platform (Windows), where it is skipped."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def package_version(dist: str) -> str:
    """The installed version of distribution `dist` (for example "dp-accounting"), or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED
