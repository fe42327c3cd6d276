"""Checksum specs and SUMS files, as templates and distro mirrors write them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from baker.checksum import (
    ALGOS,
    Checksum,
    ChecksumFileRef,
    ChecksumSpecError,
    lookup_sums,
    parse_checksum,
    parse_sums,
    url_basename,
)
from baker.errors import ChecksumError
from baker.sources.cache import DownloadCache
from baker.sources.source import resolve_checksum

DATA = b"hello baker\n"
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
SHA1 = hashlib.sha1(DATA).hexdigest()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("none", Checksum(None, None)),
        ("NONE", Checksum(None, None)),
        (f"sha256:{SHA256}", Checksum("sha256", SHA256)),
        (f"SHA256:{SHA256.upper()}", Checksum("sha256", SHA256)),
        (f"sha512:{SHA512}", Checksum("sha512", SHA512)),
        (f"md5:{MD5}", Checksum("md5", MD5)),
        (f"sha1:{SHA1}", Checksum("sha1", SHA1)),
        (SHA256, Checksum("sha256", SHA256)),
        (SHA512, Checksum("sha512", SHA512)),
        (MD5, Checksum("md5", MD5)),
        (SHA1, Checksum("sha1", SHA1)),
        (f"  sha256:{SHA256}  ", Checksum("sha256", SHA256)),
        ("file:https://example.org/SHA256SUMS", ChecksumFileRef("https://example.org/SHA256SUMS")),
        ("file:./SHA256SUMS", ChecksumFileRef("./SHA256SUMS")),
    ],
)
def test_parse_forms(spec: str, expected: object) -> None:
    assert parse_checksum(spec) == expected


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithm_bare_and_prefixed(algo: str) -> None:
    digest = hashlib.new(algo, DATA).hexdigest()
    assert parse_checksum(digest) == Checksum(algo, digest)
    assert parse_checksum(f"{algo}:{digest}") == Checksum(algo, digest)
    with pytest.raises(ChecksumSpecError, match=f"{algo} needs {ALGOS[algo]} hex digits"):
        parse_checksum(f"{algo}:{digest}0")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("", "empty"),
        ("sha256:abc", "64 hex digits"),
        (f"sha256:{SHA256[:-1]}z", "not a hex digest"),
        (f"crc32:{MD5}", "unknown algorithm"),
        ("abc123", "matches no algorithm"),
        ("file:", "needs a URL"),
        ("definitely not a checksum", "is not"),
        (f"md5:{SHA256}", "32 hex digits"),
    ],
)
def test_parse_rejects(spec: str, needle: str) -> None:
    with pytest.raises(ChecksumSpecError, match=needle) as info:
        parse_checksum(spec)
    assert isinstance(info.value, ValueError)  # the template loader can treat it as a value error


def test_str_round_trips() -> None:
    assert str(parse_checksum(SHA256)) == f"sha256:{SHA256}"
    assert str(parse_checksum("none")) == "none"
    assert parse_checksum(str(parse_checksum(f"md5:{MD5}"))) == Checksum("md5", MD5)


GNU = f"""\
{SHA256} *debian-12-genericcloud-amd64.qcow2
{"a" * 64}  debian-12-genericcloud-amd64.raw
{"b" * 64}  ./sub/other.iso
"""

BSD = f"""\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

# Fedora-Cloud-41-1.4-x86_64-CHECKSUM
SHA256 (Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2) = {SHA256}
SHA512 (Fedora-Cloud-Base-Generic-41-1.4.x86_64.raw.xz) = {SHA512}
-----BEGIN PGP SIGNATURE-----
"""


def test_parse_sums_gnu_and_bsd() -> None:
    gnu = parse_sums(GNU)
    assert gnu["debian-12-genericcloud-amd64.qcow2"] == (None, SHA256)
    assert gnu["./sub/other.iso"] == (None, "b" * 64)
    bsd = parse_sums(BSD)
    assert bsd == {
        "Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2": ("sha256", SHA256),
        "Fedora-Cloud-Base-Generic-41-1.4.x86_64.raw.xz": ("sha512", SHA512),
    }


def test_lookup_by_url_basename() -> None:
    url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2?x=1#f"
    assert lookup_sums(GNU, url) == Checksum("sha256", SHA256)
    assert lookup_sums(GNU, "https://m/other.iso") == Checksum("sha256", "b" * 64)
    assert lookup_sums(BSD, "https://m/Fedora-Cloud-Base-Generic-41-1.4.x86_64.raw.xz") == Checksum(
        "sha512", SHA512
    )
    assert url_basename("https://h/a%20b.iso") == "a b.iso"


def test_lookup_missing_entry_lists_names() -> None:
    with pytest.raises(ChecksumError) as info:
        lookup_sums(GNU, "https://m/debian-13.qcow2", source="https://m/SHA256SUMS")
    msg = str(info.value)
    assert "debian-13.qcow2" in msg and "https://m/SHA256SUMS" in msg
    assert "debian-12-genericcloud-amd64.qcow2" in msg and "debian-12-genericcloud-amd64.raw" in msg


def test_lookup_sums_filename_decides_algo() -> None:
    text = f"{SHA512}  img.qcow2\n"
    assert lookup_sums(text, "img.qcow2", source="https://m/SHA512SUMS") == Checksum("sha512", SHA512)


def test_resolve_from_local_sums_file(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(GNU)
    cache = DownloadCache(tmp_path / "cache")
    got = resolve_checksum(f"file:{sums}", "https://x/debian-12-genericcloud-amd64.qcow2", cache)
    assert got == Checksum("sha256", SHA256)
    assert resolve_checksum(f"sha1:{SHA1}", "ignored", cache) == Checksum("sha1", SHA1)
    with pytest.raises(ChecksumError, match=r"no entry for 'nope\.img'"):
        resolve_checksum(f"file://{sums}", "https://x/nope.img", cache)
