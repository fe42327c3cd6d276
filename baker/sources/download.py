"""HTTP(S) downloads for the cache: one GET streamed to a file while hashing, cancellable at once.

Only the wire: where the bytes go, whether they are kept and what the index records is cache.py's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from baker import __version__
from baker.errors import BakerError
from baker.units import human_size

CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.25  # seconds between progress callbacks
Progress = Callable[[int, int | None], None]
_HEADERS = {"User-Agent": f"baker/{__version__}", "Accept-Encoding": "identity"}


class DownloadCancelled(BakerError):
    """The caller's cancel event fired; the partial file is already gone."""


class SourceFailed(Exception):
    """One source failed for a reason worth logging before trying the next."""


@dataclass(frozen=True)
class Downloaded:
    """What a completed GET gave: digests of the body and the validators for the next request."""

    sha256: str
    digest: str  # in the pinned algorithm (the sha256 again when that is sha256 or nothing is pinned)
    etag: str | None
    last_modified: str | None


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


def reason(exc: BaseException, timeout: float) -> str:
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


def check_cancel(cancel: threading.Event | None, url: str) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"download of {url} cancelled")


def download(url: str, out: BinaryIO, *, algo: str | None, headers: dict[str, str],
             progress: Progress | None, timeout: float, cancel: threading.Event | None,
             not_modified_ok: bool = False) -> Downloaded | None:
    """GET `url` into `out`; None when the server answers 304 and `not_modified_ok` (a conditional GET).

    Raises SourceFailed for anything worth trying the next mirror for, DownloadCancelled on cancel.
    """
    sockets: list[socket.socket] = []
    with _cancel_watch(cancel, sockets):
        try:
            req = urllib.request.Request(url, headers={**_HEADERS, **headers})
            resp = _opener(sockets).open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 304 and not_modified_ok:
                return None
            raise SourceFailed(reason(e, timeout)) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            check_cancel(cancel, url)
            raise SourceFailed(reason(e, timeout)) from None
        with resp:
            sha, digest = _stream(resp, out, url, algo, progress, timeout, cancel)
            return Downloaded(sha, digest, resp.headers.get("ETag"), resp.headers.get("Last-Modified"))


def _stream(resp: http.client.HTTPResponse, out: BinaryIO, url: str, algo: str | None,
            progress: Progress | None, timeout: float, cancel: threading.Event | None) -> tuple[str, str]:
    """Copy the body to `out` while hashing; returns (sha256, digest in the pinned algo)."""
    length = resp.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    sha = hashlib.sha256()
    other = hashlib.new(algo) if algo is not None and algo != "sha256" else None
    done, last = 0, 0.0
    if progress:
        progress(0, total)
    while True:
        check_cancel(cancel, url)
        try:
            chunk = resp.read1(CHUNK)
        except TimeoutError:
            check_cancel(cancel, url)
            raise SourceFailed(f"timed out: no data for {timeout:g}s after {human_size(done)}") from None
        except (OSError, http.client.HTTPException) as e:
            check_cancel(cancel, url)
            raise SourceFailed(f"connection lost after {human_size(done)}: {reason(e, timeout)}") from None
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
    check_cancel(cancel, url)
    if total is not None and done != total:
        raise SourceFailed(f"truncated: got {done} of {total} bytes (the connection closed early)")
    if progress:
        progress(done, total)
    digest = sha.hexdigest()
    return digest, other.hexdigest() if other else digest
