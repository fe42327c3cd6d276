"""File digests remembered by (device, inode, size, mtime): a second look at an unchanged base image
or upload costs a stat, not a read — that is what keeps `build --if-changed` under two seconds.

A changed stat only means "hash again": the answer is always the content's digest, so touching a
file without changing it changes nothing downstream.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from baker.fsutil import atomic_write, file_digest
from baker.paths import cache_root

_lock = threading.Lock()
_MAX_ENTRIES = 4096


def _memo_path() -> Path:
    return cache_root() / "digests.json"


def _key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read() -> dict[str, list]:
    try:
        data = json.loads(_memo_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a regular file, from the memo when its stat is unchanged since it was last hashed."""
    p = Path(os.path.abspath(path))
    st = p.stat()
    key = _key(st)
    with _lock:
        entry = _read().get(str(p))
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == key:
        return str(entry[1])
    digest = file_digest(p)
    if p.stat().st_mtime_ns != st.st_mtime_ns:  # written while we read it: do not remember
        return digest
    with _lock:
        memo = _read()
        memo[str(p)] = [key, digest]
        if len(memo) > _MAX_ENTRIES:
            memo = dict(list(memo.items())[-_MAX_ENTRIES:])
        try:
            _memo_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write(_memo_path(), json.dumps(memo))
        except OSError:
            pass  # a read-only cache only costs speed
    return digest
