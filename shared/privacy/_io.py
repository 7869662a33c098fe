"""Crash-safe file writes for ledgers, reports and keys.

A ledger is the only record of privacy already spent: if a crash left it truncated or half-written, a resumed
run would under-count epsilon. So every write goes to a temporary file in the same folder, is flushed and
fsync'ed, and then atomically replaces the old file with `os.replace`; the folder is fsync'ed too (POSIX), so
the rename itself survives a power loss. A reader therefore sees either the old file or the new one, never a
mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
