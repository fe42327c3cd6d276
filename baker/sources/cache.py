"""A verified, content-addressed download cache for base images, ISOs and SUMS files.

Unlike Packer's cache, files are keyed by the sha256 of their *content*, not by the checksum string
or the URL, so rewriting a checksum never re-downloads and a changed checksum never reuses stale
bytes. Only verified, complete files are ever renamed into `sha256/`; concurrent
baker processes serialize on a per-target flock so one downloads and the others reuse it.

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
import http.client
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker import __version__
from baker.checksum import Checksum, mismatch
from baker.errors import BakerError, ChecksumError
from baker.fsutil import atomic_write, file_digest, remove
from baker.paths import cache_root
from baker.units import human_size

log = logging.getLogger("baker.sources")

CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.25  # seconds between progress callbacks
STALE_PARTIAL_AGE = 3600.0  # prune drops unlocked partial files older than this
Progress = Callable[[int, int | None], None]


class DownloadError(BakerError):
    """Every source failed; `failures` holds (url, reason) in the order they were tried."""

    def __init__(self, message: str, failures: list[tuple[str, str]], *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.failures = failures


class DownloadCancelled(BakerError):
    """The caller's cancel event fired; the partial file is already gone."""


class _Failed(Exception):
    """One source failed for a reason worth logging before trying the next."""


@dataclass(frozen=True)
class CacheEntry:
    """One cached file as `baker cache list` shows it."""

    path: Path
    sha256: str
    size: int
    last_used: float
    urls: tuple[str, ...] = ()
    verified: dict[str, str] = field(default_factory=dict)


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


def _opener(sockets: list[socket.socket]) -> urllib.request.OpenerDirector:
    """An opener that remembers its sockets, so a cancel can shut a blocked read down at once."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            sockets.append(self.sock)

    class TLSConn(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            sockets.append(self.sock)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Conn, req)

    class TLSHandler(urllib.request.HTTPSHandler):
        def __init__(self) -> None:
            super().__init__()
            self.tls = ssl.create_default_context()

        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(TLSConn, req, context=self.tls)

    return urllib.request.build_opener(Handler(), TLSHandler())


@contextlib.contextmanager
def _cancel_watch(cancel: threading.Event | None, sockets: list[socket.socket]) -> Iterator[None]:
    """Shut the sockets down when cancel fires, so a read blocked on a silent server returns now."""
    if cancel is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            if cancel.is_set():
                for s in list(sockets):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                return

    t = threading.Thread(target=watch, name="baker-download-cancel", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def _reason(exc: BaseException, timeout: float) -> str:
    """A one-line why for a failed request: HTTP status, timeout, or the OS error text."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"timed out: no response for {timeout:g}s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class DownloadCache:
    """Fetch files by URL list + checksum; hits by pinned checksum need no network at all."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.blobs = self.root / "sha256"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.index_path = self.root / "index.json"

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
            except (_Failed, BakerError) as e:
                failures.append((url, getattr(e, "message", None) or str(e)))
            if url != urls[-1]:
                log.warning("%s: %s; trying the next source", url, failures[-1][1])
        if stale_ok and not checksum.pinned and (stale := self._last_copy(remote)):
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
        with self._index() as idx:
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

    def list(self) -> list[CacheEntry]:
        """Cached files, most recently used first (files missing from the index still show)."""
        self._ensure_dirs()
        with self._index(write=False) as idx:
            return sorted(self._entries(idx), key=lambda e: e.last_used, reverse=True)

    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              max_bytes: int | None = None) -> builtins.list[Path]:
        """Delete cached files not used for `older_than` seconds, beyond the `keep` most recent,
        and least-recently-used ones until the total is within `max_bytes`. Returns what was removed.

        Stale partial downloads (whose download lock is free) are always cleared too.
        """
        self._ensure_dirs()
        removed: list[Path] = []
        with self._index() as idx:
            survivors = sorted(self._entries(idx), key=lambda e: e.last_used, reverse=True)
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
    def _index(self, *, write: bool = True) -> Iterator[dict[str, Any]]:
        """The index under an exclusive lock; saved atomically when the block succeeds."""
        self._ensure_dirs()
        with open(self.root / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                idx = self._load_index()
                before = json.dumps(idx, sort_keys=True)
                yield idx
                after = json.dumps(idx, sort_keys=True, indent=1)
                if write and after != before:
                    atomic_write(self.index_path, after + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self.index_path.read_text())
            if isinstance(data, dict) and data.get("version") == 1:
                data.setdefault("urls", {})
                data.setdefault("files", {})
                data.setdefault("local", {})
                return data
            log.warning("%s has an unknown layout; starting a fresh index", self.index_path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s); starting a fresh index", self.index_path, e)
        return {"version": 1, "urls": {}, "files": {}, "local": {}}

    def _entries(self, idx: dict[str, Any]) -> builtins.list[CacheEntry]:
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

    def _last_copy(self, urls: builtins.list[str]) -> Path | None:
        with self._index(write=False) as idx:
            for url in urls:
                sha = idx["urls"].get(url, {}).get("sha256")
                if sha and (self.blobs / sha).is_file():
                    return self.blobs / sha
        return None

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
        with self._index() as idx:
            rec = idx["local"].get(key)
            known = rec.get("verified", {}).get(checksum.algo) if rec and rec.get("stamp") == stamp else None
        if known is None:
            known = file_digest(path, checksum.algo)
            with self._index() as idx:
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
        headers = {"User-Agent": f"baker/{__version__}", "Accept-Encoding": "identity"}
        prev: dict[str, Any] | None = None
        if not checksum.pinned:
            with self._index(write=False) as idx:
                prev = idx["urls"].get(url)
            if prev and (self.blobs / prev.get("sha256", "-")).is_file():
                if prev.get("etag"):
                    headers["If-None-Match"] = prev["etag"]
                if prev.get("last_modified"):
                    headers["If-Modified-Since"] = prev["last_modified"]
            else:
                prev = None
        sockets: list[socket.socket] = []
        fd, tmp_name = tempfile.mkstemp(prefix=f"{key}.", suffix=".part", dir=self.tmp)
        tmp = Path(tmp_name)
        log.info("downloading %s", url)
        try:
            with os.fdopen(fd, "wb") as out, _cancel_watch(cancel, sockets):
                try:
                    req = urllib.request.Request(url, headers=headers)
                    resp = _opener(sockets).open(req, timeout=timeout)
                except urllib.error.HTTPError as e:
                    e.close()
                    if e.code == 304 and prev is not None:
                        log.info("%s is unchanged since the cached copy", url)
                        return self._record(url, prev["sha256"], None, checksum, prev)
                    raise _Failed(_reason(e, timeout)) from None
                except (OSError, http.client.HTTPException, ValueError) as e:
                    self._check_cancel(cancel, url)
                    raise _Failed(_reason(e, timeout)) from None
                with resp:
                    digests = self._stream(resp, out, url, checksum, progress, timeout, cancel)
                    meta = {"etag": resp.headers.get("ETag"),
                            "last_modified": resp.headers.get("Last-Modified")}
                out.flush()
                os.fsync(out.fileno())
            sha, got = digests
            if checksum.pinned and got != checksum.hexdigest:
                raise mismatch(url, checksum, got)
            dest = self.blobs / sha
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            return self._record(url, sha, dest.stat().st_size, checksum, meta)
        finally:
            remove(tmp)

    def _stream(self, resp: http.client.HTTPResponse, out: Any, url: str, checksum: Checksum,
                progress: Progress | None, timeout: float, cancel: threading.Event | None) -> tuple[str, str]:
        """Copy the body to `out` while hashing; returns (sha256, digest in the pinned algo)."""
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        sha = hashlib.sha256()
        other = hashlib.new(checksum.algo) if checksum.algo not in (None, "sha256") else None
        done, last = 0, 0.0
        if progress:
            progress(0, total)
        while True:
            self._check_cancel(cancel, url)
            try:
                chunk = resp.read1(CHUNK)
            except TimeoutError:
                self._check_cancel(cancel, url)
                raise _Failed(f"timed out: no data for {timeout:g}s after {human_size(done)}") from None
            except (OSError, http.client.HTTPException) as e:
                self._check_cancel(cancel, url)
                raise _Failed(f"connection lost after {human_size(done)}: {_reason(e, timeout)}") from None
            if not chunk:
                break
            out.write(chunk)
            sha.update(chunk)
            if other:
                other.update(chunk)
            done += len(chunk)
            if progress and time.monotonic() - last >= PROGRESS_INTERVAL:
                last = time.monotonic()
                progress(done, total)
        self._check_cancel(cancel, url)
        if total is not None and done != total:
            raise _Failed(f"truncated: got {done} of {total} bytes (the connection closed early)")
        if progress:
            progress(done, total)
        digest = sha.hexdigest()
        return digest, other.hexdigest() if other else digest

    @staticmethod
    def _check_cancel(cancel: threading.Event | None, url: str) -> None:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(f"download of {url} cancelled")

    def _record(self, url: str, sha: str, size: int | None, checksum: Checksum, meta: dict[str, Any]) -> Path:
        now = time.time()
        with self._index() as idx:
            rec = idx["files"].setdefault(sha, {"created": now, "verified": {}})
            rec["size"] = size if size is not None else (self.blobs / sha).stat().st_size
            rec["last_used"] = now
            rec.setdefault("verified", {})["sha256"] = sha
            if checksum.pinned:
                rec["verified"][checksum.algo] = checksum.hexdigest
            idx["urls"][url] = {"sha256": sha, "etag": meta.get("etag"),
                                "last_modified": meta.get("last_modified"), "fetched": now}
        return self.blobs / sha
