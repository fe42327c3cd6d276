"""A verified, content-addressed download cache for base images, ISOs and SUMS files.

Unlike Packer's cache, files are keyed by the sha256 of their *content*, not by the checksum string
or the URL, so rewriting a checksum never re-downloads and a changed checksum never reuses stale
bytes. Only verified, complete files are ever renamed into `sha256/`; concurrent baker processes
serialize on a per-target flock so one downloads and the others reuse it. This module decides what
to fetch and keep; the HTTP transfer is download.py's, the index index.py's.

Layout under the root::

    sha256/<hex>    verified files, read-only
    index.json      URL → digest (+ETag/Last-Modified), per-file size, last use, verified digests
    tmp/            partial downloads (<key>.<random>.part), removed on any failure
    locks/          per-target lock files
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from baker.checksum import Checksum, mismatch
from baker.errors import BakerError, ChecksumError
from baker.fsutil import file_digest, remove
from baker.paths import cache_root
from baker.sources.download import DownloadCancelled, Progress, SourceFailed, download
from baker.sources.index import CacheEntry, CacheIndex
from baker.units import human_size

__all__ = ["CacheEntry", "DownloadCache", "DownloadCancelled", "DownloadError", "Progress",
           "default_cache_root", "local_path"]

log = logging.getLogger("baker.sources")

STALE_PARTIAL_AGE = 3600.0  # prune drops unlocked partial files older than this


class DownloadError(BakerError):
    """Every source failed; `failures` holds (url, reason) in the order they were tried."""

    def __init__(self, message: str, failures: list[tuple[str, str]], *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.failures = failures


def default_cache_root() -> Path:
    """<cache root>/downloads (baker.paths.cache_root)."""
    return cache_root() / "downloads"


def local_path(url: str) -> Path | None:
    """The filesystem path for a local path or file:// URL; None for http(s)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BakerError(f"{url}: file:// URLs must name a local file (host '{parts.netloc}' given)")
        return Path(urllib.parse.unquote(parts.path))
    if scheme in ("http", "https"):
        return None
    if "://" in url:
        raise BakerError(f"{url}: unsupported URL scheme '{parts.scheme}'",
                         hint="use http(s)://, file:// or a path")
    return Path(url).expanduser()


class DownloadCache:
    """Fetch files by URL list + checksum; hits by pinned checksum need no network at all."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.blobs = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.index = CacheIndex(self.root)
        self.index_path = self.index.path

    # ---------------------------------------------------------------- public API

    def fetch(
        self,
        urls: list[str] | str,
        checksum: Checksum,
        *,
        progress: Progress | None = None,
        timeout: float = 60,
        cancel: threading.Event | None = None,
        warn_unpinned: bool = True,
        stale_ok: bool = False,
    ) -> Path:
        """A verified local path for the first of `urls` that works.

        Local paths and file:// URLs are verified in place and returned as-is (absolute). With
        `stale_ok`, an unpinned URL that cannot be reached falls back to the last copy cached.
        A `file:` checksum is resolved first (`baker.sources.source.resolve_checksum`).
        """
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise BakerError("no URL to fetch")
        remote = [u for u in urls if local_path(u) is None]
        if checksum.pinned and remote and (hit := self.lookup(checksum, remote)):
            log.info("using cached %s (%s)", hit, checksum)
            return hit
        if remote and not checksum.pinned and warn_unpinned:
            log.warning("checksum is 'none' for %s: unpinned inputs are not reproducible "
                        "(pin it with sha256:<hex> or file:<SHA256SUMS url>)", remote[0])
        failures: list[tuple[str, str]] = []
        bad_sums = 0
        for url in urls:
            try:
                path = local_path(url)
                if path is not None:
                    return self._verify_local(path, checksum)
                return self._fetch_remote(url, checksum, remote, progress, timeout, cancel)
            except DownloadCancelled:
                raise
            except ChecksumError as e:
                bad_sums += 1
                failures.append((url, e.message))
            except (SourceFailed, BakerError) as e:
                failures.append((url, getattr(e, "message", None) or str(e)))
            if url != urls[-1]:
                log.warning("%s: %s; trying the next source", url, failures[-1][1])
        if stale_ok and not checksum.pinned and (stale := self.index.last_copy(remote)):
            log.warning("cannot refresh %s (%s); using the copy cached earlier", urls[0], failures[-1][1])
            return stale
        if len(failures) == 1:
            url, why = failures[0]
            msg = why if url in why else f"{url}: {why}"
        else:
            msg = f"all {len(failures)} sources failed:\n" + "\n".join(f"  {u}: {w}" for u, w in failures)
        if bad_sums == len(failures):
            raise ChecksumError(msg, hint="the file changed upstream or the pinned checksum is wrong; "
                                          "the download was discarded")
        raise DownloadError(msg, failures,
                            hint="check the URL and network; list mirrors in iso_urls to fall back")

    def lookup(self, checksum: Checksum, urls: list[str] | tuple[str, ...] = ()) -> Path | None:
        """The cached file matching a pinned checksum, or None. Never touches the network.

        A non-sha256 checksum is matched against digests recorded at download time, then by
        hashing the file these URLs last gave (cheaper than downloading it again).
        """
        if not checksum.pinned or checksum.hexdigest is None:
            return None
        self._ensure_dirs()
        return self.index.find(checksum, urls)

    def list(self) -> list[CacheEntry]:
        """Cached files, most recently used first (files missing from the index still show)."""
        self._ensure_dirs()
        with self.index.open(write=False) as idx:
            return sorted(self.index.entries(idx), key=lambda e: e.last_used, reverse=True)

    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              max_bytes: int | None = None) -> builtins.list[Path]:
        """Delete cached files not used for `older_than` seconds, beyond the `keep` most recent,
        and least-recently-used ones until the total is within `max_bytes`. Returns what was removed.

        Stale partial downloads (whose download lock is free) are always cleared too.
        """
        self._ensure_dirs()
        removed: list[Path] = []
        with self.index.open() as idx:
            survivors = sorted(self.index.entries(idx), key=lambda e: e.last_used, reverse=True)
            now = time.time()
            doomed: list[CacheEntry] = []
            if older_than is not None:
                doomed += [e for e in survivors if now - e.last_used > older_than]
                survivors = [e for e in survivors if now - e.last_used <= older_than]
            if keep is not None:
                doomed += survivors[max(keep, 0):]
                survivors = survivors[:max(keep, 0)]
            if max_bytes is not None:
                total = sum(e.size for e in survivors)
                while survivors and total > max_bytes:
                    victim = survivors.pop()
                    total -= victim.size
                    doomed.append(victim)
            for e in doomed:
                remove(e.path)
                idx["files"].pop(e.sha256, None)
                for url in [u for u, r in idx["urls"].items() if r.get("sha256") == e.sha256]:
                    del idx["urls"][url]
                removed.append(e.path)
                log.info("pruned %s (%s)", e.path, human_size(e.size))
        removed += self._clear_partials(min_age=STALE_PARTIAL_AGE)
        return removed

    # ---------------------------------------------------------------- internals

    def _ensure_dirs(self) -> None:
        for d in (self.blobs, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self, key: str, what: str, cancel: threading.Event | None) -> Iterator[None]:
        """Serialize work on one target across processes; waiting still honours cancel."""
        with open(self.locks / f"{key}.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another baker process that is downloading %s", what)
                while True:
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelled(f"cancelled while waiting for {what}") from None
                    time.sleep(0.1)
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        continue
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _clear_partials(self, *, key: str | None = None, min_age: float = 0.0) -> builtins.list[Path]:
        """Remove partial files a killed process left. Under `key`'s lock nobody else writes them."""
        removed = []
        now = time.time()
        for part in self.tmp.glob(f"{key}.*.part" if key else "*.part"):
            try:
                if now - part.stat().st_mtime < min_age:
                    continue
            except FileNotFoundError:
                continue
            if key is None:
                owner = part.name.split(".", 1)[0]
                with open(self.locks / f"{owner}.lock", "a") as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a download is writing it right now
                    remove(part)
                    fcntl.flock(f, fcntl.LOCK_UN)
            else:
                remove(part)
            removed.append(part)
        return removed

    def _verify_local(self, path: Path, checksum: Checksum) -> Path:
        """Verify a local file in place; the digest is remembered per (inode, size, mtime, ctime)."""
        path = path.absolute()
        if not path.exists():
            raise BakerError(f"{path}: no such file",
                             hint="check the path in the template (relative paths start at the cwd)")
        if not path.is_file():
            raise BakerError(f"{path}: not a regular file")
        if not checksum.pinned or checksum.algo is None:
            return path
        st = path.stat()
        stamp = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        key = str(path.resolve())
        self._ensure_dirs()
        with self.index.open() as idx:
            rec = idx["local"].get(key)
            known = rec.get("verified", {}).get(checksum.algo) if rec and rec.get("stamp") == stamp else None
        if known is None:
            known = file_digest(path, checksum.algo)
            with self.index.open() as idx:
                rec = idx["local"].get(key)
                if not rec or rec.get("stamp") != stamp:
                    rec = idx["local"][key] = {"stamp": stamp, "verified": {}}
                rec["verified"][checksum.algo] = known
        if known != checksum.hexdigest:
            raise mismatch(str(path), checksum, known)
        return path

    def _fetch_remote(self, url: str, checksum: Checksum, urls: builtins.list[str], progress: Progress | None,
                      timeout: float, cancel: threading.Event | None) -> Path:
        self._ensure_dirs()
        key = (f"{checksum.algo}-{checksum.hexdigest}" if checksum.pinned
               else "url-" + hashlib.sha256(url.encode()).hexdigest())
        with self._lock(key, url, cancel):
            if checksum.pinned and (hit := self.lookup(checksum, urls)):
                log.info("another process fetched %s; using %s", url, hit)
                return hit
            self._clear_partials(key=key)
            return self._download(url, checksum, key, progress, timeout, cancel)

    def _download(self, url: str, checksum: Checksum, key: str, progress: Progress | None,
                  timeout: float, cancel: threading.Event | None) -> Path:
        headers: dict[str, str] = {}
        prev = None if checksum.pinned else self.index.url_record(url)
        if prev is not None:  # an unpinned URL fetched before: ask whether it changed
            if prev.get("etag"):
                headers["If-None-Match"] = prev["etag"]
            if prev.get("last_modified"):
                headers["If-Modified-Since"] = prev["last_modified"]
        fd, tmp_name = tempfile.mkstemp(prefix=f"{key}.", suffix=".part", dir=self.tmp)
        tmp = Path(tmp_name)
        log.info("downloading %s", url)
        try:
            with os.fdopen(fd, "wb") as out:
                got = download(url, out, algo=checksum.algo, headers=headers, progress=progress,
                               timeout=timeout, cancel=cancel, not_modified_ok=prev is not None)
                if got is not None:
                    out.flush()
                    os.fsync(out.fileno())
            if got is None:
                assert prev is not None
                log.info("%s is unchanged since the cached copy", url)
                return self.index.record(url, prev["sha256"], None, checksum, prev.get("etag"),
                                         prev.get("last_modified"))
            if checksum.pinned and got.digest != checksum.hexdigest:
                raise mismatch(url, checksum, got.digest)
            dest = self.blobs / got.sha256
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            return self.index.record(url, got.sha256, dest.stat().st_size, checksum, got.etag,
                                     got.last_modified)
        finally:
            remove(tmp)
