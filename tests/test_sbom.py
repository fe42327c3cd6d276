"""The package inventory, CycloneDX 1.6 output with syft-style purls, and SBOM diffs."""

from __future__ import annotations

import json

import pytest

from baker.errors import BakerError
from baker.sbom.cyclonedx import load, packages_of, purl, to_cyclonedx
from baker.sbom.diff import diff
from baker.sbom.inventory import parse, read_guest

DEB = ("OS\tdebian\t12\tDebian GNU/Linux 12 (bookworm)\n"
       "DEB\tii \topenssh-server\t1:9.2p1-2+deb12u3\tamd64\topenssh\t1:9.2p1-2+deb12u3\n"
       "DEB\tii \tlibc6\t2.36-9+deb12u4\tamd64\tglibc\t2.36-9+deb12u4\n"
       "DEB\tii \tbash\t5.2.15-2+b2\tamd64\tbash\t5.2.15-2\n"
       "DEB\trc \tremoved-pkg\t1.0\tamd64\tremoved-pkg\t1.0\n"
       "DEB\thi \theld\t2.0\tall\theld\t2.0\n"
       "garbage line\n")


def test_inventory_keeps_installed_packages_only() -> None:
    inv = parse(DEB)
    assert inv.distro == "debian-12"
    assert [p.name for p in inv.packages] == ["bash", "held", "libc6", "openssh-server"]


def test_rpm_records() -> None:
    inv = parse("OS\trocky\t9.3\tRocky Linux 9.3\n"
                "RPM\tbash\t0\t5.1.8\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\n"
                "RPM\tshadow-utils\t2\t4.9\t8.el9\tx86_64\tshadow-utils-4.9-8.el9.src.rpm\n"
                "RPM\tgpg-pubkey\t0\tabc\tdef\t(none)\t(none)\n")
    assert [(p.name, p.version) for p in inv.packages] == [("bash", "5.1.8-6.el9"),
                                                           ("shadow-utils", "2:4.9-8.el9")]
    assert str(purl(inv.packages[0], inv)) == "pkg:rpm/rocky/bash@5.1.8-6.el9?arch=x86_64&distro=rocky-9.3"


def test_purls_are_written_like_syft() -> None:
    inv = parse(DEB)
    by = {p.name: str(purl(p, inv)) for p in inv.packages}
    assert by["openssh-server"] == \
        "pkg:deb/debian/openssh-server@1:9.2p1-2+deb12u3?arch=amd64&upstream=openssh&distro=debian-12"
    # a binNMU: the source version differs from the binary's
    assert by["bash"] == "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64&upstream=bash@5.2.15-2&distro=debian-12"
    assert by["held"] == "pkg:deb/debian/held@2.0?arch=all&distro=debian-12"


def test_cyclonedx_16_validates_against_the_schema() -> None:
    text = to_cyclonedx(parse(DEB), name="img", version="1.0")
    doc = load(text)
    assert doc["specVersion"] == "1.6" and doc["metadata"]["component"]["name"] == "img"
    assert len(doc["components"]) == 4
    pytest.importorskip("jsonschema")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None


def test_diff_added_removed_changed() -> None:
    old = load(to_cyclonedx(parse(DEB), name="img", version="1"))
    new_text = DEB.replace("1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u4").replace(
        "DEB\tii \tlibc6", "DEB\trc \tlibc6") + "DEB\tii \ttree\t2.1.0-1\tamd64\ttree\t2.1.0-1\n"
    d = diff(old, load(to_cyclonedx(parse(new_text), name="img", version="2")))
    assert d.lines() == ["+ tree 2.1.0-1 (amd64)", "- libc6 2.36-9+deb12u4 (amd64)",
                         "~ openssh-server 1:9.2p1-2+deb12u3 -> 1:9.2p1-2+deb12u4 (amd64)"]
    assert diff(old, old).empty
    assert json.dumps(d.to_dict())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="not a CycloneDX"):
        load('{"spdxVersion": "SPDX-2.3"}')
    with pytest.raises(json.JSONDecodeError):
        load("not json")
    assert packages_of({"components": None}) == {}
    with pytest.raises(BakerError, match="exit 127"):
        read_guest(lambda cmd, **kw: 127)
    with pytest.raises(BakerError, match="no installed packages"):
        read_guest(lambda cmd, stdout_cb, **kw: (stdout_cb("OS\tdebian\t12\tx"), 0)[1])
