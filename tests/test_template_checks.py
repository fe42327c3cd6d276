"""Cross-field checks: each error names the key to change, at its file:line:col."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from baker.checksum import ALGOS, Checksum, parse_checksum
from baker.errors import TemplateError, TemplateErrors
from baker.template import load_template
from baker.template.checks import checksum_problem

pytestmark = pytest.mark.usefixtures("fake_exporters")  # a stand-in qcow2-only registry

BASE = "name: t\nsource:\n  cloud_image:\n    url: https://example.org/base.qcow2\n"


def fails(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises((TemplateError, TemplateErrors)) as exc:
        load_template(p, environ={})
    return str(exc.value)


def ok(tmp_path: Path, text: str):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return load_template(p, environ={})


def at(tmp_path: Path, line: int, col: int, keypath: str) -> str:
    return f"{tmp_path / 't.yaml'}:{line}:{col}: {keypath}: "


def test_no_source(tmp_path: Path) -> None:
    assert fails(tmp_path, "name: t\nsource:\n  boot_wait: 5s\n") == at(tmp_path, 2, 1, "source") + \
        "no base to build from: add source.cloud_image (a disk image URL), source.iso (an installer ISO) " \
        "or source.image (another template's image)"
    assert fails(tmp_path, "name: t\n").startswith(at(tmp_path, 1, 1, "source") + "no base to build from")


def test_both_sources(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "  iso:\n    iso_url: https://example.org/x.iso\n")
    assert msg == at(tmp_path, 5, 3, "source.iso") + \
        "source.cloud_image and source.iso are both set; keep only one"


def test_iso_needs_url(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\nsource:\n  iso:\n    iso_checksum: none\n")
    assert msg == at(tmp_path, 3, 3, "source.iso") + \
        "source.iso needs iso_url (or iso_urls, mirrors tried in order)"
    t = ok(tmp_path, "name: t\nsource:\n  iso:\n    urls: [https://a/x.iso, https://b/x.iso]\n")
    assert t.source.iso is not None and t.source.iso.iso_urls == ["https://a/x.iso", "https://b/x.iso"]


def test_name_required_and_safe(tmp_path: Path) -> None:
    msg = fails(tmp_path, "source:\n  cloud_image:\n    url: x\n")
    assert msg.startswith(at(tmp_path, 1, 1, "name") + "missing required key 'name'")
    msg = fails(tmp_path, BASE.replace("name: t", "name: my image/v1"))
    assert msg.startswith(at(tmp_path, 1, 7, "name") + "name 'my image/v1' is not a safe file name")


def test_cpus_and_memory(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  cpus: 0\n  memory: 64\n")
    lines = msg.splitlines()
    assert lines[0] == at(tmp_path, 6, 9, "machine.cpus") + "cpus must be at least 1, got 0"
    assert lines[1] == at(tmp_path, 7, 11, "machine.memory") + \
        "memory is in MiB and must be at least 128, got 64"


def test_secure_boot_needs_uefi(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  secure_boot: true\n")
    assert msg == at(tmp_path, 6, 16, "machine.secure_boot") + "secure_boot needs UEFI firmware\n" \
        "  hint: add machine.firmware: uefi"
    assert ok(tmp_path, BASE + "machine:\n  secure_boot: true\n  firmware: uefi\n").machine.secure_boot


def test_shell_needs_exactly_one_body(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shell\n    sudo: false\n")
    assert msg == at(tmp_path, 6, 5, "provisioners[0]") + \
        "a shell provisioner needs one of inline, script or scripts"
    (tmp_path / "a.sh").write_text("")
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shell\n    inline: [a]\n    script: a.sh\n")
    assert msg == at(tmp_path, 8, 13, "provisioners[0].script") + \
        "give only one of inline, script or scripts (found inline and script)"


def test_file_provisioner_rules(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: file\n    destination: /x\n")
    assert msg == at(tmp_path, 6, 5, "provisioners[0]") + \
        "a file provisioner needs source (a local file) or content (text)"
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: file\n    content: hi\n")
    assert msg.startswith(at(tmp_path, 6, 5, "provisioners[0].destination") +
                          "a file provisioner needs a destination")
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: file\n    direction: download\n"
                                 "    content: hi\n    destination: x\n")
    assert msg.startswith(at(tmp_path, 8, 14, "provisioners[0].content") + "direction: download copies")
    (tmp_path / "f").write_text("")
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: file\n    source: f\n    content: hi\n"
                                 "    destination: /x\n")
    assert msg == at(tmp_path, 8, 14, "provisioners[0].content") + "give source or content, not both"


def test_file_mode_is_octal_text(tmp_path: Path) -> None:
    t = ok(tmp_path, BASE + "provisioners:\n  - type: file\n    content: x\n    destination: /x\n"
                            "    mode: 0644\n")
    assert t.provisioners[0].mode == "0644"
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: file\n    content: x\n    destination: /x\n"
                                 "    mode: rw\n")
    assert msg.startswith(at(tmp_path, 9, 11, "provisioners[0].mode") + "mode 'rw' is not an octal file mode")


def test_communicator_none_with_provisioners(tmp_path: Path) -> None:
    none = BASE + "communicator:\n  type: none\nprovisioners:\n"
    msg = fails(tmp_path, none + "  - type: shell\n    inline: [a]\n")
    assert msg.startswith(at(tmp_path, 6, 9, "communicator.type") +
                          "communicator.type is none, but provisioners[0] (shell) needs to reach the guest")
    t = ok(tmp_path, none + "  - type: shell-local\n    inline: [a]\n")
    assert t.communicator.type == "none"


@pytest.mark.parametrize("value", [
    "none", "NONE", "sha256:" + "a" * 64, "sha512:" + "B" * 128, "md5:" + "0" * 32, "sha1:" + "f" * 40,
    "a" * 64, "a" * 32, "file:https://example.org/SHA256SUMS", "file:./SHA256SUMS",
])
def test_valid_checksums(value: str) -> None:
    assert checksum_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), [
    ("sha256:abc", "sha256 needs 64 hex digits, got 3"),
    ("sha3:" + "a" * 64, "unknown checksum type 'sha3'"),
    ("sha256:" + "z" * 64, "sha256 digest must be hex digits"),
    ("abc", "not a recognised checksum"),
    ("", "empty checksum"),
    ("file:", "file: needs a URL or path after it"),
])
def test_invalid_checksums(value: str, problem: str) -> None:
    assert checksum_problem(value) == problem


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_fetcher_algorithm_loads_bare_and_prefixed(tmp_path: Path, algo: str) -> None:
    """The loader and the fetcher share one grammar: whatever a download can be verified with loads."""
    digest = hashlib.new(algo, b"baker").hexdigest()
    assert len(digest) == ALGOS[algo]
    for spec in (digest, f"{algo}:{digest}", f"{algo.upper()}:{digest.upper()}"):
        assert checksum_problem(spec) is None
        t = ok(tmp_path, BASE + f"    checksum: '{spec}'\n")
        assert t.source.cloud_image.checksum == spec
        assert parse_checksum(spec) == Checksum(algo, digest)


def test_checksum_error_position(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "    checksum: sha256:abc\n")
    assert msg.startswith(at(tmp_path, 5, 15, "source.cloud_image.checksum") +
                          "invalid checksum: sha256 needs 64 hex digits, got 3")
    msg = fails(tmp_path, "name: t\nsource:\n  iso:\n    iso_url: x\n    iso_checksum: md5:1\n")
    assert msg.startswith(at(tmp_path, 5, 19, "source.iso.iso_checksum") + "invalid checksum: md5 needs 32")


def test_no_cascade_after_conversion_error(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\nsource:\n  cloud_image:\n    checksum: none\n")
    assert "no base to build from" not in msg


def test_trailing_slash_survives_path_resolution(tmp_path):
    """`source: dir/` means "the folder's contents" to the file provisioner; resolution must keep it."""
    from baker.template import load_template

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hi")
    (tmp_path / "t.yaml").write_text(
        "name: t\nsource: {cloud_image: {url: /dev/null}}\n"
        "provisioners:\n  - {type: file, source: www/, destination: /srv}\n"
        "  - {type: file, source: www, destination: /srv}\n"
    )
    t = load_template(tmp_path / "t.yaml")
    assert t.provisioners[0].source == f"{tmp_path}/www/"
    assert t.provisioners[1].source == f"{tmp_path}/www"


def test_minimize_locales_must_be_locale_names(tmp_path: Path) -> None:
    text = BASE + "generalize:\n  minimize:\n    locales: [en, 'de; rm -rf /']\n"
    assert fails(tmp_path, text).startswith(at(tmp_path, 7, 19, "generalize.minimize.locales[1]")
                                            + "'de; rm -rf /' is not a locale name")
    t = ok(tmp_path, BASE + "generalize:\n  minimize: {locales: [en, pt_BR, sr@latin], docs: true}\n")
    assert t.generalize.minimize.locales == ["en", "pt_BR", "sr@latin"] and t.generalize.minimize.apt
