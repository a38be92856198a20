"""The few file and time helpers every module shares: atomic replacement, UTC timestamps, log tails.

A file that later steps trust (manifest, configs, results, checkpoints, caches, downloads) is
written with `atomic_path`: a temporary file in the same folder, flushed to disk, then renamed
over the target, so that a crash or kill -9 at any point leaves the old file or the new one,
never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second (`2026-12-01T19:03:15+00:00`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash of the machine keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open folders; the rename itself still happened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to `path`; once the block has written it, flush it to disk and
    rename it over `path`. If the block raises, `path` is untouched and the temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, mode)  # mkstemp makes it private; other users' jobs read results too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` in one step."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old or the new file, never half."""
    write_bytes_atomic(path, text.encode())


def tail_lines(path: str | Path, max_bytes: int = 16384) -> list[str]:
    """The lines in the last `max_bytes` of a (log) file; [] when it does not exist."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
            return f.read().decode(errors="replace").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return []
