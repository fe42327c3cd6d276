"""The guests' apt cache proxy against a real upstream HTTP server on loopback (no VM needed)."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from baker.aptcache import (
    AptCacheProxy,
    cache_file,
    cacheable,
    guest_install_command,
    guest_remove_command,
    prune,
    usage,
)

FILES = {
    "/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb": b"DEB" * 50_000,
    "/debian/dists/bookworm/InRelease": b"signed index v1",
    "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "ab" * 32: b"packages by hash",
}


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: Counter = Counter()
    seen_headers: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).hits[self.path] += 1
        type(self).seen_headers.append(dict(self.headers))
        if self.path.endswith("/truncated.deb"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        if self.headers.get("If-Modified-Since") and self.path.endswith("InRelease"):
            self.send_response(304)
            self.end_headers()
            return
        data = FILES.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")
            return
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
            self.send_header("Last-Modified", "Sun, 06 Dec 2026 00:00:00 GMT")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    _Upstream.hits = Counter()
    _Upstream.seen_headers = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[AptCacheProxy]:
    with AptCacheProxy(tmp_path / "apt") as p:
        yield p


def _get(proxy: AptCacheProxy, url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        c.request(method, url, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def test_package_files_are_fetched_once_and_then_served_from_the_cache(upstream: str, proxy: AptCacheProxy,
                                                                       tmp_path: Path):
    url = upstream + "/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"
    first = _get(proxy, url)
    second = _get(proxy, url)
    assert first[0] == second[0] == 200
    assert first[1] == second[1] == FILES["/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"]
    assert _Upstream.hits["/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"] == 1
    assert cache_file(tmp_path / "apt", url).read_bytes() == first[1]
    assert (proxy.stats.hits, proxy.stats.misses) == (1, 1)
    # a later build (a new proxy on the same cache dir) never asks upstream again
    with AptCacheProxy(tmp_path / "apt") as later:
        assert _get(later, url)[1] == first[1]
        assert later.stats.hits == 1 and later.stats.misses == 0
    assert _Upstream.hits["/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"] == 1


def test_indexes_pass_through_so_apt_always_sees_the_mirrors_current_signed_release(upstream: str,
                                                                                   proxy: AptCacheProxy):
    url = upstream + "/debian/dists/bookworm/InRelease"
    assert _get(proxy, url)[1] == b"signed index v1"
    assert _get(proxy, url)[1] == b"signed index v1"
    assert _Upstream.hits["/debian/dists/bookworm/InRelease"] == 2
    status, body, _ = _get(proxy, url, {"If-Modified-Since": "Sun, 06 Dec 2026 00:00:00 GMT"})
    assert status == 304 and body == b""
    assert _Upstream.seen_headers[-1]["If-Modified-Since"] == "Sun, 06 Dec 2026 00:00:00 GMT"
    assert proxy.stats.passed == 3 and proxy.stats.hits == proxy.stats.misses == 0


def test_by_hash_indexes_are_kept_and_ranges_pass_through(upstream: str, proxy: AptCacheProxy):
    path = "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/" + "ab" * 32
    assert _get(proxy, upstream + path)[1] == b"packages by hash"
    assert _get(proxy, upstream + path)[1] == b"packages by hash"
    assert _Upstream.hits[path] == 1
    deb = "/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"
    status, body, headers = _get(proxy, upstream + deb, {"Range": "bytes=100-"})
    assert status == 206 and body == FILES[deb][100:] and headers["Content-Range"].startswith("bytes 100-")


def test_upstream_errors_are_the_mirrors_answer_and_nothing_half_fetched_is_kept(upstream: str,
                                                                                 proxy: AptCacheProxy,
                                                                                 tmp_path: Path):
    missing = upstream + "/debian/pool/main/n/nope/nope_1_amd64.deb"
    assert _get(proxy, missing)[0] == 404
    assert not cache_file(tmp_path / "apt", missing).exists()
    short = upstream + "/debian/pool/main/x/x/truncated.deb"
    assert _get(proxy, short)[0] == 502
    assert not cache_file(tmp_path / "apt", short).exists()
    assert [p for p in (tmp_path / "apt").rglob("*") if p.is_file()] == []  # no .part files left
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connection refused
        status, body, _ = _get(proxy, f"http://127.0.0.1:{dead}/debian/pool/a_1_all.deb")
    assert status == 502 and b"upstream" in body


def test_only_plain_http_is_proxied_and_only_on_loopback(proxy: AptCacheProxy):
    assert _get(proxy, "/relative/path")[0] == 400
    assert _get(proxy, "ftp://example.org/x.deb")[0] == 400
    assert _get(proxy, "example.org:443", method="CONNECT")[0] == 405
    assert proxy._server.server_address[0] == "127.0.0.1"


def test_what_is_cacheable():
    assert cacheable("http://deb.debian.org/debian/pool/main/n/nginx/nginx-light_1.22.1-9_amd64.deb")
    assert cacheable("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/"
                     + "0f" * 32)
    assert not cacheable("http://deb.debian.org/debian/dists/bookworm/InRelease")
    assert not cacheable("http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz")
    assert not cacheable("http://deb.debian.org/debian/pool/main/n/nginx/")


def test_the_guest_setting_is_one_file_written_and_removed_with_sudo():
    install = guest_install_command("http://10.0.2.2:4242")
    assert "Acquire::http::Proxy" in install and "10.0.2.2:4242" in install and "sudo -n tee" in install
    assert guest_remove_command() == "sudo -n rm -f /etc/apt/apt.conf.d/00baker-apt-cache"


def test_prune_goes_by_last_use_and_clears_stale_partial_files(upstream: str, proxy: AptCacheProxy,
                                                               tmp_path: Path):
    root = tmp_path / "apt"
    old_url = upstream + "/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"
    new_url = upstream + "/x/by-hash/SHA256/" + "ab" * 32
    _Upstream.hits.clear()
    FILES["/x/by-hash/SHA256/" + "ab" * 32] = b"fresh"
    _get(proxy, old_url)
    _get(proxy, new_url)
    old, new = cache_file(root, old_url), cache_file(root, new_url)
    week = 7 * 86400
    os.utime(old, (time.time() - 2 * week, time.time() - 2 * week))
    os.utime(new, (time.time() - 2 * week, time.time() - 2 * week))
    _get(proxy, new_url)  # a hit marks it used now
    part = old.parent / ".part-stale"
    part.write_bytes(b"half")
    os.utime(part, (time.time() - 7200, time.time() - 7200))
    assert usage(root) == (2, len(FILES["/debian/pool/main/t/tree/tree_2.1.0-1_amd64.deb"]) + len(b"fresh"))
    assert sorted(prune(root, older_than=week)) == sorted([old, part])
    assert new.exists() and usage(root) == (1, len(b"fresh"))
    assert prune(root) == []  # no age given: only stale partial files go


def test_cache_list_and_prune_cover_the_apt_cache(tmp_path: Path):
    env = {**os.environ, "BAKER_CACHE_DIR": str(tmp_path / "cache")}
    kept = cache_file(tmp_path / "cache" / "apt", "http://deb.debian.org/debian/pool/a_1_all.deb")
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x" * 2048)
    os.utime(kept, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    listed = subprocess.run([sys.executable, "-m", "baker", "cache", "list"], capture_output=True, text=True,
                            env=env, check=True).stdout
    assert "apt cache (--apt-cache): 1 packages, 2.0 KiB" in listed
    pruned = subprocess.run([sys.executable, "-m", "baker", "cache", "prune", "--older-than", "30d"],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert f"removed {kept}" in pruned and not kept.exists()


class _Guest:
    """The communicator's run() as the step uses it: records commands, answers with set exit codes."""

    def __init__(self, codes: dict[str, int]) -> None:
        self.codes, self.ran = codes, []

    def run(self, command: str, **_: object) -> int:
        self.ran.append(command)
        return next((rc for key, rc in self.codes.items() if key in command), 0)


def _state(tmp_path: Path, guest: _Guest):
    import logging
    import threading

    from baker.state import BuildOptions, BuildState
    from baker.template import load_template

    (tmp_path / "base.qcow2").write_bytes(b"")
    (tmp_path / "t.yaml").write_text("name: t\nsource: {cloud_image: {url: base.qcow2, checksum: none}}\n"
                                     "exports: [{type: qcow2}]\n")
    return BuildState(template=load_template(tmp_path / "t.yaml"), cancel=threading.Event(),
                      options=BuildOptions(output_dir=tmp_path / "out", apt_cache=True),
                      log=logging.getLogger("test"), comm=guest)  # type: ignore[arg-type]


def test_a_guest_that_cannot_take_the_setting_fails_the_step_and_the_proxy_stops(tmp_path: Path, monkeypatch):
    from baker.errors import BakerError
    from baker.steps.aptcache import UseAptCache

    monkeypatch.setenv("BAKER_CACHE_DIR", str(tmp_path / "cache"))
    s = _state(tmp_path, _Guest({"tee": 1}))
    step = UseAptCache()
    with pytest.raises(BakerError, match="could not point the guest's apt at the cache") as e:
        step.run(s)
    assert "passwordless sudo" in (e.value.hint or "")
    port = s.apt_cache.port
    step.cleanup(s)
    assert s.apt_cache is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_the_setting_is_removed_before_shutdown_and_a_failed_removal_fails_the_build(tmp_path: Path,
                                                                                       monkeypatch):
    from baker.errors import BakerError
    from baker.steps.aptcache import UseAptCache

    monkeypatch.setenv("BAKER_CACHE_DIR", str(tmp_path / "cache"))
    s = _state(tmp_path, _Guest({}))
    step = UseAptCache()
    step.run(s)
    try:
        assert s.before_shutdown == [("remove the apt cache setting", guest_remove_command())]
        assert f"10.0.2.2:{s.apt_cache.port}" in s.comm.ran[0]
    finally:
        step.cleanup(s)
    from baker.steps.shutdown import ShutDown

    s.comm = _Guest({"rm -f": 1})
    with pytest.raises(BakerError, match="could not remove the apt cache setting in the guest"):
        ShutDown().run(s)
