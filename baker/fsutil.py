"""Atomic writes, hashing and log tails: nothing half-written ever sits at an output path."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `dest` (same filesystem); rename over dest only if the block succeeds.

    Works for files and directories. On any exception the temp is removed and dest is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f"{suffix}.part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        remove(tmp)
        raise


def atomic_write(dest: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> Path:
    with atomic_path(dest) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.chmod(tmp, mode)
    return Path(dest)


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a file, symlink or tree; missing is fine."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def file_digest(path: str | os.PathLike[str], algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def private_dir(parent: str | os.PathLike[str] | None = None, prefix: str = "baker-") -> Path:
    """A fresh 0700 directory: build keys and seeds live here, unreadable to other users."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o700)
    return path


def read_end(path: str | os.PathLike[str], limit: int = 64 * 1024) -> str:
    """The last `limit` bytes of a log that may still be growing, decoded leniently ("" if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
