"""The build's HTTP server for preseed/kickstart files: 127.0.0.1 only, a kernel-chosen port.

Binding port 0 lets the kernel pick a free port atomically, so parallel builds never race for one
(Packer's probe-then-bind race, issue #4520). Loopback-only: QEMU's user networking forwards the
guest's 10.0.2.2 to the host's loopback, so nothing is exposed to the LAN.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import posixpath
import threading
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from baker.errors import BakerError

log = logging.getLogger("baker.http")

GUEST_HOST_IP = "10.0.2.2"  # the host as seen from a guest on QEMU user networking
BIND_ADDRESS = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "baker-http"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        path = self._clean_path()
        data: bytes | None = None
        if path is None:
            return self._reply(HTTPStatus.BAD_REQUEST, b"bad path\n", body=body)
        if path in self.server.content:
            data = self.server.content[path]
        elif self.server.root is not None:
            file = self._file_for(path)
            if file is not None:
                try:
                    data = file.read_bytes()
                except OSError:
                    data = None
        if data is None:
            return self._reply(HTTPStatus.NOT_FOUND, b"not found\n", body=body)
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if ctype.startswith("text/") or path.endswith((".cfg", ".ks", ".seed", ".yaml", ".yml")):
            ctype = "text/plain; charset=utf-8" if not ctype.startswith("text/") else ctype
        self._reply(HTTPStatus.OK, data, ctype=ctype, body=body)

    def _clean_path(self) -> str | None:
        """The request path, percent-decoded and normalised, always starting with '/'."""
        raw = urllib.parse.urlsplit(self.path).path
        try:
            path = urllib.parse.unquote(raw, errors="strict") if raw else "/"
        except UnicodeDecodeError:
            return None
        if "\x00" in path or "\\" in path:
            return None
        norm = posixpath.normpath("/" + path.lstrip("/"))
        return "/" + norm.lstrip("/")

    def _file_for(self, path: str) -> Path | None:
        """The file under root for `path`; None for anything outside root (.., symlinks out)."""
        root = self.server.root
        assert root is not None
        candidate = (root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(root):
            log.warning("refused %s: outside %s", path, root)
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None

    def _reply(self, status: HTTPStatus, data: bytes, *, ctype: str = "text/plain", body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)
        log.info("%s %s %d %d bytes (from %s)", self.command, self.path, status.value, len(data),
                 self.client_address[0])

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: _reply logs every request to baker.http instead of stderr."""

    def log_error(self, format: str, *args: Any) -> None:
        log.info("bad request from %s: %s", self.client_address[0], format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, root: Path | None, content: dict[str, bytes]):
        self.root = root
        self.content = content
        super().__init__((BIND_ADDRESS, 0), _Handler)


def _encode(content: Mapping[str, str | bytes]) -> dict[str, bytes]:
    return {
        "/" + posixpath.normpath("/" + k.lstrip("/")).lstrip("/"): v.encode() if isinstance(v, str) else v
        for k, v in content.items()
    }


class LoopbackService:
    """A ThreadingHTTPServer on 127.0.0.1 served from a daemon thread while the context is open."""

    def __init__(self, server: ThreadingHTTPServer, label: str) -> None:
        self._server = server
        self._label = label
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"baker-{self._label}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class HTTPServer(LoopbackService):
    """Serve `directory` and/or `content` (path → text) while the context is open.

    `content` wins over a file of the same path. `.url` is for the host; `.guest_url` for the VM.
    """

    _server: _Server

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 content: Mapping[str, str | bytes] | None = None):
        root = None
        if directory is not None:
            root = Path(directory).resolve()
            if not root.is_dir():
                raise BakerError(f"http_directory {directory} is not a directory",
                                 hint="create it or fix the path (relative to the template's folder)")
        super().__init__(_Server(root, _encode(content or {})), "http")

    def set_content(self, content: Mapping[str, str | bytes]) -> None:
        """Replace the served content; templates render it once the port (build.http_port) is known."""
        self._server.content = _encode(content)

    @property
    def url(self) -> str:
        return f"http://{BIND_ADDRESS}:{self.port}"

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST_IP}:{self.port}"

    def start(self) -> Self:
        super().start()
        log.info("serving HTTP on %s (guest: %s)", self.url, self.guest_url)
        return self
