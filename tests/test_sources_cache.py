"""The download cache against a real HTTP server on 127.0.0.1 that can 404, hang, truncate and redirect."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import baker
from baker.checksum import Checksum, parse_checksum
from baker.errors import BakerError, ChecksumError
from baker.sources.cache import DownloadCache, DownloadCancelled, DownloadError, default_cache_root
from baker.sources.source import fetch_source, resolve_checksum
from baker.template.model import CloudImageSource

IMAGE = os.urandom(300_000) + b"baker-image"
IMAGE_SHA256 = hashlib.sha256(IMAGE).hexdigest()
PINNED = Checksum("sha256", IMAGE_SHA256)
REPO_ROOT = Path(baker.__file__).resolve().parent.parent


class Server:
    """A local HTTP server whose paths choose the misbehaviour; counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"/img.qcow2": IMAGE}
        self.hits: Counter[str] = Counter()
        self.stop = threading.Event()
        self.slow_delay = 0.02
        self.etag = '"v1"'
        self.last_modified = formatdate(time.time() - 3600, usegmt=True)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                outer.hits[path] += 1
                try:
                    outer.handle(self, path)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def handle(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path == "/hang":  # accepts, then never answers
            self.stop.wait(30)
            return
        if path == "/hang-body":  # headers, a little data, then silence
            h.send_response(200)
            h.send_header("Content-Length", str(len(IMAGE)))
            h.end_headers()
            h.wfile.write(IMAGE[:1000])
            h.wfile.flush()
            self.stop.wait(30)
            return
        if path == "/redirect/img.qcow2":
            h.send_response(302)
            h.send_header("Location", "/img.qcow2")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if path == "/truncated/img.qcow2":
            h.send_response(200)
            h.send_header("Content-Length", str(len(IMAGE)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(IMAGE[: len(IMAGE) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if path.startswith("/slow/"):  # the image in small chunks, for cancel and concurrency tests
            h.send_response(200)
            h.send_header("Content-Length", str(len(IMAGE)))
            h.end_headers()
            for i in range(0, len(IMAGE), 16_384):
                if self.stop.is_set():
                    return
                h.wfile.write(IMAGE[i : i + 16_384])
                h.wfile.flush()
                time.sleep(self.slow_delay)
            return
        body = self.files.get(path)
        if body is None:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if h.headers.get("If-None-Match") == self.etag:
            h.send_response(304)
            h.send_header("ETag", self.etag)
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", self.etag)
        h.send_header("Last-Modified", self.last_modified)
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path) -> DownloadCache:
    return DownloadCache(tmp_path / "cache")


def leftovers(cache: DownloadCache) -> list[str]:
    """Anything in the cache that is not a verified blob (partials, temp files)."""
    return sorted(p.name for p in cache.tmp.iterdir()) + sorted(
        p.name for p in cache.blobs.iterdir() if len(p.name) != 64
    )


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BAKER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "baker" / "downloads"
    monkeypatch.setenv("BAKER_CACHE_DIR", str(tmp_path / "b"))
    assert default_cache_root() == tmp_path / "b" / "downloads"
    assert DownloadCache().root == tmp_path / "b" / "downloads"


def test_download_then_hit_without_network(server: Server, cache: DownloadCache) -> None:
    seen: list[tuple[int, int | None]] = []
    path = cache.fetch([server.url + "/img.qcow2"], PINNED, progress=lambda d, t: seen.append((d, t)))
    assert path == cache.blobs / IMAGE_SHA256
    assert path.read_bytes() == IMAGE
    assert seen[0] == (0, len(IMAGE)) and seen[-1] == (len(IMAGE), len(IMAGE))
    server.close()  # no network from here on
    again = cache.fetch([server.url + "/img.qcow2"], PINNED)
    assert again == path
    # the same digest written differently is the same cache entry (Packer #9595)
    assert cache.fetch([server.url + "/img.qcow2"], parse_checksum(IMAGE_SHA256)) == path
    [entry] = cache.list()
    assert entry.sha256 == IMAGE_SHA256 and entry.size == len(IMAGE)
    assert entry.urls == (server.url + "/img.qcow2",)
    assert leftovers(cache) == []


def test_other_algorithm_stored_by_sha256(server: Server, cache: DownloadCache) -> None:
    sha512 = Checksum("sha512", hashlib.sha512(IMAGE).hexdigest())
    path = cache.fetch([server.url + "/img.qcow2"], sha512)
    assert path.name == IMAGE_SHA256
    assert cache.list()[0].verified["sha512"] == sha512.hexdigest
    # md5 was never recorded: the cache hashes the file the URL gave last time instead of downloading
    md5 = Checksum("md5", hashlib.md5(IMAGE).hexdigest())
    assert cache.fetch([server.url + "/img.qcow2"], md5) == path
    assert cache.fetch([server.url + "/img.qcow2"], sha512) == path
    assert server.hits["/img.qcow2"] == 1


def test_new_checksum_for_same_url_downloads_again(server: Server, cache: DownloadCache) -> None:
    cache.fetch([server.url + "/img.qcow2"], PINNED)
    new = IMAGE + b"v2"
    server.files["/img.qcow2"] = new
    path = cache.fetch([server.url + "/img.qcow2"], Checksum("sha256", hashlib.sha256(new).hexdigest()))
    assert path.read_bytes() == new
    assert server.hits["/img.qcow2"] == 2


def test_redirect_followed(server: Server, cache: DownloadCache) -> None:
    assert cache.fetch([server.url + "/redirect/img.qcow2"], PINNED).read_bytes() == IMAGE


def test_mirrors_fall_back_in_order(server: Server, cache: DownloadCache,
                                    caplog: pytest.LogCaptureFixture) -> None:
    urls = [server.url + "/missing/img.qcow2", server.url + "/truncated/img.qcow2", server.url + "/img.qcow2"]
    with caplog.at_level(logging.WARNING, logger="baker.sources"):
        path = cache.fetch(urls, PINNED)
    assert path.read_bytes() == IMAGE
    assert "HTTP 404" in caplog.text and "truncated" in caplog.text
    assert [server.hits[p] for p in ("/missing/img.qcow2", "/truncated/img.qcow2", "/img.qcow2")] == [1, 1, 1]


def test_all_mirrors_fail_lists_each(server: Server, cache: DownloadCache) -> None:
    urls = [server.url + "/a.img", "http://127.0.0.1:1/b.img"]
    with pytest.raises(DownloadError) as info:
        cache.fetch(urls, PINNED, timeout=2)
    msg = str(info.value)
    assert "all 2 sources failed" in msg
    assert f"{urls[0]}: HTTP 404" in msg and urls[1] in msg
    assert [u for u, _ in info.value.failures] == urls


def test_404_names_status(server: Server, cache: DownloadCache) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        cache.fetch([server.url + "/nope.img"], PINNED)
    assert leftovers(cache) == []


def test_wrong_checksum_keeps_nothing(server: Server, cache: DownloadCache) -> None:
    wrong = Checksum("sha256", "0" * 64)
    with pytest.raises(ChecksumError) as info:
        cache.fetch([server.url + "/img.qcow2"], wrong)
    msg = str(info.value)
    assert "0" * 64 in msg and IMAGE_SHA256 in msg and server.url + "/img.qcow2" in msg
    assert leftovers(cache) == [] and list(cache.blobs.iterdir()) == []
    assert cache.list() == []


def test_truncated_keeps_nothing(server: Server, cache: DownloadCache) -> None:
    with pytest.raises(DownloadError, match=r"truncated: got \d+ of \d+ bytes"):
        cache.fetch([server.url + "/truncated/img.qcow2"], PINNED)
    assert leftovers(cache) == [] and list(cache.blobs.iterdir()) == []


@pytest.mark.parametrize("path", ["/hang", "/hang-body"])
def test_hanging_server_times_out(server: Server, cache: DownloadCache, path: str) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        cache.fetch([server.url + path], PINNED, timeout=0.5)
    assert time.monotonic() - start < 5
    assert leftovers(cache) == []


def test_cancel_mid_download(server: Server, cache: DownloadCache) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done > 0:
            cancel.set()

    start = time.monotonic()
    with pytest.raises(DownloadCancelled):
        cache.fetch([server.url + "/slow/img.qcow2"], PINNED, progress=progress, cancel=cancel)
    assert time.monotonic() - start < 3
    assert leftovers(cache) == [] and list(cache.blobs.iterdir()) == []


def test_cancel_while_server_silent(server: Server, cache: DownloadCache) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(DownloadCancelled):
        cache.fetch([server.url + "/hang-body"], PINNED, timeout=30, cancel=cancel)
    assert time.monotonic() - start < 3
    assert leftovers(cache) == []


def test_unpinned_revalidates_with_etag(server: Server, cache: DownloadCache,
                                        caplog: pytest.LogCaptureFixture) -> None:
    url = server.url + "/img.qcow2"
    with caplog.at_level(logging.WARNING, logger="baker.sources"):
        first = cache.fetch([url], Checksum(None, None))
    assert "not reproducible" in caplog.text
    assert cache.fetch([url], resolve_checksum("none", url, cache)) == first  # 304 Not Modified
    assert server.hits[url.removeprefix(server.url)] == 2
    server.etag = '"v2"'
    server.files["/img.qcow2"] = b"changed upstream"
    changed = cache.fetch([url], Checksum(None, None))
    assert changed.read_bytes() == b"changed upstream" and changed != first


def test_sums_file_over_http(server: Server, cache: DownloadCache) -> None:
    server.files["/SHA256SUMS"] = f"{IMAGE_SHA256} *img.qcow2\n{'c' * 64}  other.iso\n".encode()
    spec = f"file:{server.url}/SHA256SUMS"
    url = server.url + "/img.qcow2"
    assert resolve_checksum(spec, url, cache) == PINNED
    assert fetch_source(CloudImageSource(url=url, checksum=spec), cache).read_bytes() == IMAGE
    with pytest.raises(ChecksumError, match=r"no entry for 'nope\.qcow2'.*img\.qcow2, other\.iso"):
        resolve_checksum(spec, server.url + "/nope.qcow2", cache)
    server.close()  # offline: the last copy of the SUMS file still resolves, the image comes from cache
    assert resolve_checksum(spec, url, cache) == PINNED
    assert fetch_source(CloudImageSource(url=url, checksum=spec), cache).read_bytes() == IMAGE


def test_local_path_verified_in_place(tmp_path: Path, cache: DownloadCache) -> None:
    img = tmp_path / "base.qcow2"
    img.write_bytes(IMAGE)
    assert cache.fetch([str(img)], PINNED) == img
    assert cache.fetch([img.as_uri()], PINNED) == img
    assert cache.fetch([str(img)], Checksum(None, None)) == img
    assert list(cache.blobs.iterdir()) == []  # never copied
    with pytest.raises(ChecksumError, match=r"base\.qcow2"):
        cache.fetch([str(img)], Checksum("sha256", "1" * 64))
    assert img.exists()  # a user's file is never deleted
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(BakerError, match=f"{missing}: no such file"):
        cache.fetch([str(missing)], PINNED)


def test_local_path_after_failed_mirror(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    img = tmp_path / "base.qcow2"
    img.write_bytes(IMAGE)
    assert cache.fetch([server.url + "/gone.img", str(img)], PINNED) == img


def test_prune(server: Server, cache: DownloadCache) -> None:
    paths = []
    for i in range(3):
        body = IMAGE + bytes([i]) * 1000
        server.files[f"/f{i}"] = body
        pin = Checksum("sha256", hashlib.sha256(body).hexdigest())
        paths.append(cache.fetch([server.url + f"/f{i}"], pin))
        time.sleep(0.02)
    stale = cache.tmp / "sha256-dead.1234.part"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    assert cache.prune(older_than=3600) == [stale]
    assert cache.prune(keep=2) == [paths[0]]
    assert not paths[0].exists() and paths[1].exists()
    assert cache.prune(max_bytes=len(IMAGE) + 2000) == [paths[1]]
    assert [e.path for e in cache.list()] == [paths[2]]
    time.sleep(0.05)
    assert cache.prune(older_than=0.01) == [paths[2]]
    assert cache.list() == [] and leftovers(cache) == []
    # a pruned URL downloads again instead of pointing at a missing file
    assert cache.fetch([server.url + "/f0"], Checksum(None, None)).exists()


def test_corrupt_index_is_rebuilt(server: Server, cache: DownloadCache) -> None:
    path = cache.fetch([server.url + "/img.qcow2"], PINNED)
    cache.index_path.write_text("{not json")
    assert cache.fetch([server.url + "/img.qcow2"], PINNED) == path  # blobs still found by content
    assert [e.path for e in cache.list()] == [path]


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from baker.sources.cache import DownloadCache
    from baker.checksum import Checksum
    path = DownloadCache(Path(sys.argv[1])).fetch([sys.argv[2]], Checksum("sha256", sys.argv[3]))
    print(path)
    """
)


def test_two_processes_download_once(server: Server, tmp_path: Path) -> None:
    server.slow_delay = 0.05  # ~1 s per download, so the second process starts mid-download
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    url = server.url + "/slow/img.qcow2"
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "cache"), url, IMAGE_SHA256]

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = spawn()
    deadline = time.monotonic() + 20
    while server.hits["/slow/img.qcow2"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = spawn()
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert {o.strip() for o, _ in outs} == {str(tmp_path / "cache" / "sha256" / IMAGE_SHA256)}
    assert server.hits["/slow/img.qcow2"] == 1


def test_fetch_source_blocks(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    from baker.sources import source_urls
    from baker.template.model import IsoSource

    (tmp_path / "SHA256SUMS").write_text(f"{IMAGE_SHA256}  img.qcow2\n")
    (tmp_path / "img.qcow2").write_bytes(IMAGE)
    iso = IsoSource(iso_url=server.url + "/missing.iso", iso_urls=[server.url + "/img.qcow2"],
                    iso_checksum=f"sha256:{IMAGE_SHA256}")
    assert source_urls(iso) == [server.url + "/missing.iso", server.url + "/img.qcow2"]
    assert fetch_source(iso, cache).read_bytes() == IMAGE
    local = CloudImageSource(url="img.qcow2", checksum="file:SHA256SUMS")
    assert fetch_source(local, cache, base_dir=tmp_path) == tmp_path / "img.qcow2"
