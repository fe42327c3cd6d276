"""Keeping the apt cache bounded: a kept file's mtime is when a build last used it."""

from __future__ import annotations

import time
from pathlib import Path

from baker.paths import cache_root

STALE_PART_AGE = 3600.0  # a .part file this old belongs to no fetch still running


def apt_cache_dir() -> Path:
    return cache_root() / "apt"


def usage(root: Path | None = None) -> tuple[int, int]:
    """(files, bytes) kept."""
    files = [p for p in (root or apt_cache_dir()).glob("*/*") if p.is_file() and not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


def prune(root: Path | None = None, *, older_than: float | None = None) -> list[Path]:
    """Remove kept files not used for `older_than` seconds (all of them for 0), and stale .part files."""
    root = root or apt_cache_dir()
    now = time.time()
    removed = []
    for p in sorted(root.glob("*/*")):
        age = now - p.stat().st_mtime
        part = p.name.startswith(".part-")
        if (part and age > STALE_PART_AGE) or (not part and older_than is not None and age > older_than):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
