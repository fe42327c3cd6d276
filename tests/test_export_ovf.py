"""OVF and OVA: DMTF schema validity, cross-references, VMware/VirtualBox rules, tar order, manifest."""

from __future__ import annotations

import hashlib
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from baker.export import EXPORTERS
from baker.export.ovf import NS, parse_manifest
from baker.export.vmdk import read_header, walk_stream
from tests.helpers.exports import (
    MARKER,
    all_exports,
    compare,
    context,
    read_marker,
    scratch,
    vm_spec,
)
from tests.helpers.ovfcheck import OVF, RASD, check_descriptor, q, validate


def read_ova(path: Path) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(path, "r:") as tf:
        members = tf.getmembers()
        data = {m.name: tf.extractfile(m).read() for m in members}
    return members, data


def test_ova_order_format_and_manifest():
    path = all_exports().results["ova"].files[0].path
    assert path.name == "testvm.ova"
    assert path.read_bytes()[257:265] == b"ustar\x0000"  # ustar, not GNU, not gzip
    members, data = read_ova(path)
    names = [m.name for m in members]
    assert names == ["testvm.ovf", "testvm.mf", "testvm-disk1.vmdk"]
    for m in members:
        assert m.isreg() and m.uid == 0 and m.gid == 0 and m.mode == 0o644
    mf = parse_manifest(data["testvm.mf"].decode())
    assert set(mf) == {"testvm.ovf", "testvm-disk1.vmdk"}
    for name, (alg, digest) in mf.items():
        assert alg == "SHA256" and hashlib.sha256(data[name]).hexdigest() == digest
    disk_size = len(data["testvm-disk1.vmdk"])
    root = check_descriptor(data["testvm.ovf"].decode(), {"testvm-disk1.vmdk": disk_size})
    assert root.find(f".//{q('ovf', 'Annotation')}").text == "Export test <image> & friends"
    disk = scratch("ova") / "testvm-disk1.vmdk"
    disk.write_bytes(data["testvm-disk1.vmdk"])
    assert walk_stream(disk, inflate=True).trailing_bytes == 0
    assert read_header(disk).version == 3
    assert compare(disk, "vmdk").returncode == 0
    assert read_marker(disk, "vmdk") == MARKER


def test_ovf_directory_package():
    files = {f.path.name: f for f in all_exports().results["ovf"].files}
    assert set(files) == {"testvm.ovf", "testvm.mf", "testvm-disk1.vmdk"}
    disk = files["testvm-disk1.vmdk"].path
    root = check_descriptor(files["testvm.ovf"].path.read_text(), {disk.name: disk.stat().st_size})
    firmware = [c for c in root.iter(q("vmw", "Config")) if c.get(q("vmw", "key")) == "firmware"]
    assert firmware[0].get(q("vmw", "value")) == "bios" and firmware[0].get(f"{{{OVF}}}required") == "false"
    mf = files["testvm.mf"].path.read_text()
    assert mf.endswith("\n") and "SHA256 (" not in mf and "SHA2-256" not in mf
    for name, (_, digest) in parse_manifest(mf).items():
        assert files[name].sha256 == digest
    h = read_header(disk)
    assert h.ddb("ddb.adapterType") == "lsilogic" and h.ddb("ddb.virtualHWVersion") == "13"


@pytest.mark.parametrize(("controller", "rtype", "subtype", "adapter"), [
    ("sata", 20, "vmware.sata.ahci", "ide"),
    ("ide", 5, None, "ide"),
    ("pvscsi", 6, "VirtualSCSI", "lsilogic"),
])
def test_ovf_controllers_uefi_and_hw_family(controller, rtype, subtype, adapter):
    out = scratch(f"ovf-{controller}")
    opts = EXPORTERS["ovf"].Options(disk_controller=controller, virtual_system_type="vmx-17",
                                    nic_type="VmxNet3", manifest_algorithm="SHA512")
    res = EXPORTERS["ovf"]().export(context(out, vm_spec(firmware="uefi", description="")), opts)
    files = {f.path.name: f.path for f in res.files}
    text = files["testvm.ovf"].read_text()
    validate(text)
    root = ET.fromstring(text)
    assert root.find(f".//{{{NS['vssd']}}}VirtualSystemType").text == "vmx-17"
    ctl = next(i for i in root.iter(q("ovf", "Item")) if i.findtext(f"{{{RASD}}}InstanceID") == "3")
    assert int(ctl.findtext(f"{{{RASD}}}ResourceType")) == rtype
    assert ctl.findtext(f"{{{RASD}}}ResourceSubType") == subtype
    assert [c.get(q("vmw", "value")) for c in root.iter(q("vmw", "Config"))] == ["efi"]
    h = read_header(files["testvm-disk1.vmdk"])
    assert h.ddb("ddb.adapterType") == adapter and h.ddb("ddb.virtualHWVersion") == "17"
    assert files["testvm.mf"].read_text().startswith("SHA512(testvm.ovf)= ")


def test_schema_catches_a_broken_descriptor():
    """The validator is real: RASD children out of schema order must fail."""
    text = all_exports().results["ovf"].files[0].path.read_text()
    units = "<rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>"
    cpu_type = "<rasd:ResourceType>3</rasd:ResourceType>"
    broken = text.replace(units, "", 1).replace(cpu_type, cpu_type + units, 1)
    assert broken != text
    with pytest.raises(AssertionError):
        validate(broken)


@pytest.mark.parametrize("bad", [{"virtual_system_type": "virtualbox-2.2"}, {"nic_type": "rtl8139"},
                                 {"disk_controller": "nvme"}, {"os_id": 70000}])
def test_ova_rejects_bad_options_without_writing(bad):
    out = scratch("ovabad")
    with pytest.raises(Exception, match="export ova"):
        EXPORTERS["ova"]().export(context(out), EXPORTERS["ova"].Options(**bad))
    assert list(out.iterdir()) == []


def test_ova_switches_to_gnu_tar_for_members_too_big_for_ustar(monkeypatch):
    """ustar sizes stop below 8 GiB; past that the OVA must use GNU base-256 sizes (patched limit here)."""
    from baker.export import ovf

    d = scratch("ovagnu")
    members = [d / "a.ovf", d / "a.mf", d / "a-disk1.vmdk"]
    for p in members:
        p.write_bytes(b"x" * 2048)
    monkeypatch.setattr(ovf, "USTAR_LIMIT", 1024)
    ovf.write_ova(d / "a.ova", members)
    assert (d / "a.ova").read_bytes()[257:265] == b"ustar  \0"
    with tarfile.open(d / "a.ova") as tf:
        assert tf.getnames() == ["a.ovf", "a.mf", "a-disk1.vmdk"]
