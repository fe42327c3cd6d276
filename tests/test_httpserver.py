"""The build's HTTP server: files and inline content, 404s, no escape from the root, loopback only."""

from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from baker.errors import BakerError
from baker.httpserver import HTTPServer


def get(server: HTTPServer, path: str) -> tuple[int, bytes]:
    """Raw GET (no client-side path normalisation, so traversal attempts reach the server)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def root(tmp_path):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "preseed.cfg").write_text("d-i foo\n")
    (site / "sub" / "ks.cfg").write_text("kickstart\n")
    (site / "sub" / "index.html").write_text("<p>index</p>")
    (tmp_path / "secret.txt").write_text("SECRET")
    (site / "escape").symlink_to(tmp_path / "secret.txt")
    return site


def test_serves_directory_and_content(root, caplog):
    caplog.set_level(logging.INFO, logger="baker.http")
    with HTTPServer(root, {"/user-data": "#cloud-config\n", "meta-data": b"id: x\n"}) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert srv.guest_url == f"http://10.0.2.2:{srv.port}"
        assert get(srv, "/preseed.cfg") == (200, b"d-i foo\n")
        assert get(srv, "/sub/ks.cfg") == (200, b"kickstart\n")
        assert get(srv, "/sub/") == (200, b"<p>index</p>")
        assert get(srv, "/user-data") == (200, b"#cloud-config\n")
        assert get(srv, "/meta-data?x=1") == (200, b"id: x\n")
        assert get(srv, "/sub/%6bs.cfg") == (200, b"kickstart\n")
        with urllib.request.urlopen(srv.url + "/preseed.cfg", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
    logged = [r.getMessage() for r in caplog.records if r.name == "baker.http"]
    assert any("GET /preseed.cfg 200" in m for m in logged)


def test_content_wins_over_file(root):
    with HTTPServer(root, {"/preseed.cfg": "rendered"}) as srv:
        assert get(srv, "/preseed.cfg") == (200, b"rendered")


def test_content_only_and_404_logged(caplog):
    caplog.set_level(logging.INFO, logger="baker.http")
    with HTTPServer(content={"/a": "A"}) as srv:
        assert get(srv, "/a") == (200, b"A")
        assert get(srv, "/b")[0] == 404
        assert get(srv, "/")[0] == 404
    assert any("GET /b 404" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "path", ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
             "/escape", "/sub/..%5c..%5csecret.txt", "//etc/passwd", "/%00", "/%ff"],
)
def test_no_traversal_outside_root(root, path):
    with HTTPServer(root) as srv:
        status, body = get(srv, path)
    assert status in (400, 403, 404)
    assert b"SECRET" not in body and b"root:" not in body


def test_head_request(root):
    with HTTPServer(root) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("HEAD", "/preseed.cfg")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "8" and resp.read() == b""
        conn.close()


def test_ports_are_distinct_and_released():
    a, b = HTTPServer(content={"/": "x"}), HTTPServer(content={"/": "y"})
    try:
        assert a.port != b.port
    finally:
        a.close()
        b.close()
    with HTTPServer(content={"/x": "x"}) as srv:
        port = srv.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=2)


def _non_loopback_ip() -> str | None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=False).stdout
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


@pytest.mark.parametrize("kind", ["127.0.0.2", "host-ip"])
def test_bound_to_127_0_0_1_only(kind):
    addr = "127.0.0.2" if kind == "127.0.0.2" else _non_loopback_ip()
    if addr is None:
        pytest.skip("host has no non-loopback IPv4 address")
    with HTTPServer(content={"/x": "x"}) as srv:
        assert get(srv, "/x")[0] == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((addr, srv.port), timeout=3).close()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(BakerError, match="is not a directory"):
        HTTPServer(tmp_path / "nope")


def test_parallel_requests(root):
    import concurrent.futures

    with HTTPServer(root) as srv, concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: get(srv, "/preseed.cfg"), range(32)))
    assert all(r == (200, b"d-i foo\n") for r in results)
