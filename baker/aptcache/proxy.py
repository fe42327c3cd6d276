"""A caching HTTP proxy for guests' apt downloads, on the host's loopback.

Nightly rebuilds install the same packages night after night. apt names a package file by its
version (pool/…/name_version_arch.deb) and an index by its hash (…/by-hash/SHA256/<digest>), so
those URLs never change content and can be kept forever; everything else (InRelease, Packages
without by-hash, anything unknown) passes through untouched, so apt's own signature checks see
exactly what the mirror serves. A kept file is written under a temporary name and renamed, so
concurrent builds sharing the cache never see half a file.

apt-cacher-ng was the first choice; it cannot bind a socket on hosts whose getaddrinfo() has no
configured-address list (gVisor sandboxes, where this project's CI runs), and a proxy this small is
easier to keep correct than that to work around.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from baker.httpserver import BIND_ADDRESS, LoopbackService

log = logging.getLogger("baker.aptcache")

UPSTREAM_TIMEOUT = 60.0
CHUNK = 1 << 16
#: content addressed by name: a package file carries its version, a by-hash index its digest
_IMMUTABLE = re.compile(r"(\.u?deb|\.dsc|\.tar\.(gz|xz|bz2|zst)|\.diff\.gz)$"
                        r"|/by-hash/[^/]+/[0-9a-fA-F]{32,}$")
#: response headers a client may need, forwarded from upstream as they are
_FORWARD = ("Content-Type", "Content-Length", "Last-Modified", "ETag", "Content-Range", "Accept-Ranges",
            "Location", "Cache-Control", "Expires", "Date")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    passed: int = 0  # not cacheable: forwarded as is
    hit_bytes: int = 0
    miss_bytes: int = 0

    def summary(self) -> str:
        mib = 1 << 20
        return (f"{self.hits} from cache ({self.hit_bytes / mib:.1f} MiB), {self.misses} fetched and kept "
                f"({self.miss_bytes / mib:.1f} MiB), {self.passed} passed through")


def cacheable(url: str) -> bool:
    return bool(_IMMUTABLE.search(urllib.parse.urlsplit(url).path))


def cache_file(root: Path, url: str) -> Path:
    """Where `url` is kept: by the digest of the URL, so any mirror layout fits one flat scheme."""
    digest = hashlib.sha256(url.encode()).hexdigest()
    return root / digest[:2] / digest


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # apt pipelines requests over one connection
    server_version = "baker-apt-cache"
    sys_version = ""

    def do_GET(self) -> None:
        self._proxy(body=True)

    def do_HEAD(self) -> None:
        self._proxy(body=False)

    def do_CONNECT(self) -> None:
        self._error(405, "CONNECT is not offered: https sources go to their mirror directly")

    def _proxy(self, *, body: bool) -> None:
        url = self.path
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return self._error(400, f"not an absolute http:// URL: {url[:200]}")
        kept = cache_file(self.server.root, url)
        if cacheable(url) and "Range" not in self.headers:
            if kept.is_file():
                with contextlib.suppress(OSError):
                    os.utime(kept)  # last used now: `baker cache prune --older-than` goes by this
                return self._send_kept(kept, body=body)
            if body:
                return self._fetch_and_keep(parts, url, kept)
        self._pass_through(parts, body=body)

    def _upstream(self, parts: urllib.parse.SplitResult, method: str,
                  headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=UPSTREAM_TIMEOUT)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        conn.request(method, target, headers={"Host": parts.netloc, **headers})
        return conn, conn.getresponse()

    def _pass_through(self, parts: urllib.parse.SplitResult, *, body: bool) -> None:
        wanted = {k: v for k in ("Range", "If-Modified-Since", "If-None-Match", "If-Range", "Accept",
                                 "User-Agent", "Cache-Control") if (v := self.headers.get(k)) is not None}
        try:
            conn, resp = self._upstream(parts, self.command, wanted)
        except (OSError, http.client.HTTPException) as e:
            return self._error(502, f"upstream {parts.netloc}: {e}")
        try:
            self.server.count(passed=True)
            self.send_response(resp.status, resp.reason)
            for k in _FORWARD:
                if (v := resp.getheader(k)) is not None:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length")
            no_body = not body or resp.status in (204, 304) or 100 <= resp.status < 200
            if length is None and not no_body:
                self.send_header("Connection", "close")  # the end of the body is the end of the stream
                self.close_connection = True
            self.end_headers()
            if not no_body:
                shutil.copyfileobj(resp, self.wfile, CHUNK)
        finally:
            conn.close()

    def _fetch_and_keep(self, parts: urllib.parse.SplitResult, url: str, kept: Path) -> None:
        try:
            conn, resp = self._upstream(parts, "GET", {"User-Agent": self.headers.get("User-Agent", "")})
        except (OSError, http.client.HTTPException) as e:
            return self._error(502, f"upstream {parts.netloc}: {e}")
        try:
            if resp.status != 200:  # 404s and redirects are the mirror's answer: pass them on, keep nothing
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k in ("Content-Type", "Location", "Last-Modified"):
                    if (v := resp.getheader(k)) is not None:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.server.count(passed=True)
                return
            kept.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=kept.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(resp, f, CHUNK)
                expected = resp.getheader("Content-Length")
                size = os.path.getsize(tmp)
                if expected is not None and int(expected) != size:
                    raise OSError(f"short read from {parts.netloc}: {size} of {expected} bytes")
                os.replace(tmp, kept)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (OSError, http.client.HTTPException) as e:
            return self._error(502, f"upstream {parts.netloc}: {e!r}")
        finally:
            conn.close()
        self.server.count(miss=size)
        log.debug("kept %s (%d bytes)", url, size)
        self._send_kept(kept, body=True, counted=True)

    def _send_kept(self, kept: Path, *, body: bool, counted: bool = False) -> None:
        try:
            f = kept.open("rb")
        except OSError as e:
            return self._error(502, f"cache: {e}")
        with f:
            size = os.fstat(f.fileno()).st_size
            if not counted:
                self.server.count(hit=size)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile, CHUNK)

    def _error(self, status: int, message: str) -> None:
        log.info("apt cache: %d %s", status, message)
        data = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, self.path, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("apt cache: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats = CacheStats()
        self._lock = threading.Lock()
        super().__init__((BIND_ADDRESS, 0), _Handler)

    def count(self, *, hit: int | None = None, miss: int | None = None, passed: bool = False) -> None:
        with self._lock:
            if hit is not None:
                self.stats.hits += 1
                self.stats.hit_bytes += hit
            if miss is not None:
                self.stats.misses += 1
                self.stats.miss_bytes += miss
            if passed:
                self.stats.passed += 1


class AptCacheProxy(LoopbackService):
    """Serve while the context is open; `.port` on 127.0.0.1 (the guest reaches it as 10.0.2.2)."""

    _server: _Server

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(_Server(root), "apt-cache")

    @property
    def stats(self) -> CacheStats:
        return self._server.stats

    def start(self) -> Self:
        super().start()
        log.info("apt cache proxy on %s:%d (cache %s)", BIND_ADDRESS, self.port, self._server.root)
        return self
