"""libvirt domain XML, checked by libvirt itself: `virsh -c test:///default define --validate` (no daemon)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from baker.export import EXPORTERS
from tests.helpers.exports import DISK_SIZE, all_exports, compare, context, info, scratch, sh, vm_spec

needs_virsh = pytest.mark.skipif(shutil.which("virsh") is None, reason="virsh not installed")


def define(xml: Path) -> str:
    """Define the domain in libvirt's in-process test driver and return libvirt's normalised XML."""
    name = ET.parse(xml).getroot().findtext("name")
    r = sh("virsh", "-q", "-c", "test:///default", f"define --validate {xml}; dumpxml {name}", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files(result) -> dict[str, Path]:
    return {f.kind: f.path for f in result.files}


@needs_virsh
def test_bios_domain_defines_and_matches_vmspec():
    f = files(all_exports().results["libvirt"])
    disk, xml = f["disk"], f["descriptor"]
    assert (disk.name, xml.name) == ("testvm-libvirt.qcow2", "testvm.xml")
    dumped = ET.fromstring(define(xml))
    assert dumped.get("type") == "kvm"
    assert int(dumped.findtext("memory")) == 1024 * 1024  # KiB after normalisation
    assert dumped.findtext("vcpu") == "2"
    assert dumped.find("os/type").get("machine") == "q35" and dumped.find("os/loader") is None
    d = dumped.find("devices/disk")
    assert d.find("driver").get("type") == "qcow2"
    assert d.find("source").get("file") == str(disk.resolve())
    assert d.find("target").get("bus") == "virtio"
    nic = dumped.find("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "default"
    assert nic.find("model").get("type") == "virtio"
    meta = ET.parse(xml).getroot().find("metadata/{urn:x-baker:image:1}image")
    assert meta.findtext("{urn:x-baker:image:1}sha256") == all_exports().results["libvirt"].files[0].sha256
    i = info(disk, "qcow2")
    assert i["virtual-size"] == DISK_SIZE and "backing-filename" not in i
    assert compare(disk, "qcow2").returncode == 0


@needs_virsh
@pytest.mark.parametrize(("interface", "bus"), [("virtio-scsi", "scsi"), ("ide", "sata"), ("sata", "sata")])
def test_uefi_raw_domain_defines(interface, bus):
    out = scratch(f"libvirt-{interface}")
    vm = vm_spec(firmware="uefi", disk_interface=interface, os_type="ubuntu_64")
    opts = EXPORTERS["libvirt"].Options(disk_format="raw", domain_type="qemu",
                                        disk_path="/var/lib/libvirt/images/testvm.raw")
    res = EXPORTERS["libvirt"]().export(context(out, vm), opts)
    f = files(res)
    dumped = ET.fromstring(define(f["descriptor"]))
    assert dumped.get("type") == "qemu"
    loader = dumped.find("os/loader")
    assert loader.get("type") == "pflash" and loader.text.endswith("OVMF_CODE_4M.fd")
    assert dumped.find("os/nvram").get("template").endswith("OVMF_VARS_4M.fd")
    d = dumped.find("devices/disk")
    assert d.find("driver").get("type") == "raw" and d.find("target").get("bus") == bus
    assert d.find("source").get("file") == "/var/lib/libvirt/images/testvm.raw"
    assert compare(f["disk"], "raw").returncode == 0


def test_relative_disk_path_is_refused():
    out = scratch("libvirt-rel")
    with pytest.raises(Exception, match="absolute"):
        EXPORTERS["libvirt"]().export(context(out), EXPORTERS["libvirt"].Options(disk_path="images/x.qcow2"))
    assert list(out.iterdir()) == []
