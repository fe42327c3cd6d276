"""The cache's index.json: which blob each URL last gave, what each blob was verified as, when used.

Every read and write holds an exclusive flock on index.lock, and a changed index is saved atomically,
so concurrent baker processes never see or write half an index. Blobs are named by their sha256 and
found without the index too: a lost index costs only the extra digests it remembered.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.checksum import Checksum
from baker.fsutil import atomic_write, file_digest, remove

log = logging.getLogger("baker.sources")


@dataclass(frozen=True)
class CacheEntry:
    """One cached file as `baker cache list` shows it."""

    path: Path
    sha256: str
    size: int
    last_used: float
    urls: tuple[str, ...] = ()
    verified: dict[str, str] = field(default_factory=dict)


class CacheIndex:
    """index.json beside the `sha256/` blobs of a cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "sha256"
        self.path = root / "index.json"

    @contextlib.contextmanager
    def open(self, *, write: bool = True) -> Iterator[dict[str, Any]]:
        """The index under an exclusive lock; saved atomically when the block succeeds."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                idx = self._load()
                before = json.dumps(idx, sort_keys=True)
                yield idx
                after = json.dumps(idx, sort_keys=True, indent=1)
                if write and after != before:
                    atomic_write(self.path, after + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and data.get("version") == 1:
                data.setdefault("urls", {})
                data.setdefault("files", {})
                data.setdefault("local", {})
                return data
            log.warning("%s has an unknown layout; starting a fresh index", self.path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s); starting a fresh index", self.path, e)
        return {"version": 1, "urls": {}, "files": {}, "local": {}}

    def entries(self, idx: dict[str, Any]) -> list[CacheEntry]:
        """Every blob on disk (files missing from the index still show), with what the index knows."""
        entries = []
        for path in self.blobs.iterdir():
            if not path.is_file():
                continue
            rec = idx["files"].get(path.name, {})
            st = path.stat()
            urls = tuple(u for u, r in idx["urls"].items() if r.get("sha256") == path.name)
            entries.append(CacheEntry(path, path.name, st.st_size, rec.get("last_used", st.st_mtime),
                                      urls, dict(rec.get("verified", {}))))
        return entries

    def find(self, checksum: Checksum, urls: list[str] | tuple[str, ...] = ()) -> Path | None:
        """The blob matching a pinned checksum, marked as used; None if there is none.

        A non-sha256 checksum is matched against digests recorded at download time, then by
        hashing the file these URLs last gave (cheaper than downloading it again).
        """
        with self.open() as idx:
            files: dict[str, Any] = idx["files"]
            sha: str | None = None
            if checksum.algo == "sha256":
                sha = checksum.hexdigest
            else:
                sha = next((s for s, f in files.items()
                            if f.get("verified", {}).get(checksum.algo) == checksum.hexdigest), None)
                if sha is None:
                    for url in urls:
                        cand = idx["urls"].get(url, {}).get("sha256")
                        if cand and (self.blobs / cand).is_file() and \
                                file_digest(self.blobs / cand, checksum.algo or "") == checksum.hexdigest:
                            sha = cand
                            break
            if sha is None:
                return None
            path = self.blobs / sha
            if not path.is_file():
                return None
            rec = files.get(sha)
            if rec and rec.get("size") not in (None, path.stat().st_size):
                log.warning("cached %s has the wrong size; discarding it", path)
                remove(path)
                files.pop(sha, None)
                return None
            rec = files.setdefault(sha, {"size": path.stat().st_size, "created": time.time()})
            rec["last_used"] = time.time()
            rec.setdefault("verified", {})[checksum.algo] = checksum.hexdigest
            return path

    def url_record(self, url: str) -> dict[str, Any] | None:
        """What `url` gave last time (sha256, etag, last_modified), if its blob is still there."""
        with self.open(write=False) as idx:
            prev = idx["urls"].get(url)
        return prev if prev and (self.blobs / prev.get("sha256", "-")).is_file() else None

    def last_copy(self, urls: list[str]) -> Path | None:
        """The blob the first of `urls` that has one gave last time."""
        with self.open(write=False) as idx:
            for url in urls:
                sha = idx["urls"].get(url, {}).get("sha256")
                if sha and (self.blobs / sha).is_file():
                    return self.blobs / sha
        return None

    def record(self, url: str, sha: str, size: int | None, checksum: Checksum,
               etag: str | None, last_modified: str | None) -> Path:
        """Note that `url` gave blob `sha` (verified as `checksum`), with its HTTP validators."""
        now = time.time()
        with self.open() as idx:
            rec = idx["files"].setdefault(sha, {"created": now, "verified": {}})
            rec["size"] = size if size is not None else (self.blobs / sha).stat().st_size
            rec["last_used"] = now
            rec.setdefault("verified", {})["sha256"] = sha
            if checksum.pinned:
                rec["verified"][checksum.algo] = checksum.hexdigest
            idx["urls"][url] = {"sha256": sha, "etag": etag, "last_modified": last_modified, "fetched": now}
        return self.blobs / sha
