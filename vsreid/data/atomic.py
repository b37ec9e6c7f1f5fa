"""Atomic file writes: write to a hidden temporary name in the same folder, then rename."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    The temporary name is hidden (``.<name>.<pid>-<random><suffix>``, suffix ``.tmp`` by default), so neither readers
    that skip dotfiles nor globs like ``*.png`` ever see a partial file, and the writing process can be told (see
    :func:`remove_orphaned_temporaries`). Writers that pick the format from the extension (OpenCV) pass e.g.
    ``suffix=".tmp.jpg"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600 files; results should be readable like any other file
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result to ``path``; return ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


_TEMPORARY = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp(\.\w+)?$")


def remove_orphaned_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files of :func:`atomic_path` under ``folder`` whose writing process is gone (killed);
    those of live processes (a concurrent run) stay. Returns how many were deleted."""
    removed = 0
    for path in Path(folder).rglob(".*.tmp*"):
        found = _TEMPORARY.match(path.name)
        if found and not _alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
