"""Vagrant boxes and the versioned catalog, checked by Debian's `vagrant box add` (no hypervisor needed)."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from baker.export import EXPORTERS, run_exports
from tests.helpers.exports import DISK_SIZE, all_exports, compare, context, info, scratch, sh, vm_spec
from tests.helpers.ovfcheck import check_descriptor

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")


def box(provider: str) -> Path:
    (f,) = [f for r in all_exports().results.values() if r.type == "vagrant" for f in r.files
            if f.kind == "box" and f.path.name.endswith(f"-{provider}.box")]
    return f.path


def vagrant(home: Path, *args: str | Path, check: bool = True):
    r = sh("vagrant", *args, check=False, env={"VAGRANT_HOME": str(home), "PATH": "/usr/bin:/bin",
                                                "HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1"})
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def unpack(path: Path) -> Path:
    d = scratch("box")
    with tarfile.open(path, "r:*") as tf:
        assert all(m.isreg() and "/" not in m.name for m in tf.getmembers())
        tf.extractall(d, filter="data")
    return d


def test_libvirt_box_follows_vagrant_libvirt_rules():
    path = box("libvirt")
    assert path.name == "testvm-1.2.0-libvirt.box"
    d = unpack(path)
    assert sorted(p.name for p in d.iterdir()) == ["Vagrantfile", "box.img", "metadata.json"]
    meta = json.loads((d / "metadata.json").read_text())
    assert meta == {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}
    assert isinstance(meta["virtual_size"], int) and meta["virtual_size"] << 30 >= DISK_SIZE
    i = info(d / "box.img", "qcow2")
    assert i["virtual-size"] == DISK_SIZE and "backing-filename" not in i
    assert compare(d / "box.img", "qcow2").returncode == 0
    assert "config.vm.provider :libvirt" in (d / "Vagrantfile").read_text()


def test_virtualbox_box_has_ovf_disk_and_base_mac():
    d = unpack(box("virtualbox"))
    names = sorted(p.name for p in d.iterdir())
    assert names == ["Vagrantfile", "box-disk001.vmdk", "box.ovf", "metadata.json"]
    assert json.loads((d / "metadata.json").read_text()) == {"provider": "virtualbox"}
    assert re.search(r'config\.vm\.base_mac = "080027[0-9A-F]{6}"', (d / "Vagrantfile").read_text())
    disk = d / "box-disk001.vmdk"
    check_descriptor((d / "box.ovf").read_text(), {disk.name: disk.stat().st_size}, vmware=False)
    assert compare(disk, "vmdk").returncode == 0


def test_vagrant_box_add_boxes_and_catalog():
    home = scratch("vagrant-home")
    catalog = all_exports().out / "testvm.box.json"
    data = json.loads(catalog.read_text())
    (version,) = data["versions"]
    assert version["version"] == "1.2.0"
    assert sorted(p["name"] for p in version["providers"]) == ["libvirt", "virtualbox"]
    for p in version["providers"]:
        assert p["checksum_type"] == "sha256" and p["url"].startswith("file:///")
    vagrant(home, "box", "add", "--name", "test/libvirt", box("libvirt"))
    vagrant(home, "box", "add", "--name", "test/vbox", box("virtualbox"))
    r = vagrant(home, "box", "add", "--provider", "libvirt", catalog)
    assert "Calculating and comparing box checksum" in r.stdout
    listing = vagrant(home, "box", "list").stdout
    assert "test/libvirt" in listing and "(virtualbox, 0)" in listing
    assert re.search(r"testvm\s+\(libvirt, 1\.2\.0\)", listing)


def test_vagrant_rejects_corrupted_box_and_wrong_checksum():
    home = scratch("vagrant-bad")
    d = scratch("vagrant-corrupt")
    bad = d / "bad.box"
    data = box("libvirt").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    assert vagrant(home, "box", "add", "--name", "test/bad", bad, check=False).returncode != 0
    catalog = json.loads((all_exports().out / "testvm.box.json").read_text())
    for p in catalog["versions"][0]["providers"]:
        p["checksum"] = "0" * 64
    (d / "cat.json").write_text(json.dumps(catalog))
    r = vagrant(home, "box", "add", "--provider", "libvirt", d / "cat.json", check=False)
    assert r.returncode != 0 and "checksum" in (r.stdout + r.stderr).lower()
    assert "testvm" not in vagrant(home, "box", "list").stdout


def test_catalog_keeps_older_versions():
    out = scratch("vagrant-versions")
    for v in ("1.0.0", "1.1.0"):
        opts = EXPORTERS["vagrant"].Options(compress=False)
        run_exports(context(out, vm_spec(version=v)), [("vagrant", opts)])
    catalog = out / "testvm.box.json"
    versions = json.loads(catalog.read_text())["versions"]
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0"]
    assert (out / "testvm-1.0.0-libvirt.box").is_file() and (out / "testvm-1.1.0-libvirt.box").is_file()
    home = scratch("vagrant-home2")
    vagrant(home, "box", "add", "--box-version", "1.0.0", catalog)
    vagrant(home, "box", "add", catalog)
    listing = vagrant(home, "box", "list").stdout
    assert "1.0.0" in listing and "1.1.0" in listing
    assert sh("sha256sum", "-c", "SHA256SUMS", cwd=out).returncode == 0


def test_bad_vagrant_options():
    out = scratch("vagrant-opts")
    for bad, vm in [({"base_mac": "08:00:27:00:00:01"}, vm_spec()), ({}, vm_spec(version="latest"))]:
        with pytest.raises(Exception, match="export vagrant"):
            EXPORTERS["vagrant"]().export(context(out, vm), EXPORTERS["vagrant"].Options(**bad))
    assert list(out.iterdir()) == []
