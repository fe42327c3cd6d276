"""OVF descriptor checks shared by the OVF/OVA and Vagrant tests: DMTF schema plus cross-references."""

from __future__ import annotations

import functools
import io
import xml.etree.ElementTree as ET

import pytest

from baker.export.ovf import NS, VMDK_STREAM_FORMAT
from tests.helpers.exports import DISK_SIZE, XSD_DIR

OVF = NS["ovf"]
RASD = NS["rasd"]


def q(ns: str, tag: str) -> str:
    return f"{{{NS[ns]}}}{tag}"


@functools.cache
def _schema():
    import xmlschema

    return xmlschema.XMLSchema(str(XSD_DIR / "ovf-bundle.xsd"))


def validate(text: str) -> None:
    """Validate against the DMTF OVF 1.0 envelope + CIM schemas (through the bundle wrapper)."""
    pytest.importorskip("xmlschema")
    if not (XSD_DIR / "ovf-bundle.xsd").is_file():
        pytest.skip(f"DMTF schemas not found in {XSD_DIR}")
    errors = list(_schema().iter_errors(io.StringIO(text)))
    assert not errors, "\n".join(str(e)[:500] for e in errors[:3])


def check_descriptor(text: str, files: dict[str, int], *, vmware: bool = True) -> ET.Element:
    """Schema plus the cross-references the schema cannot see, and both importers' rules."""
    validate(text)
    root = ET.fromstring(text)
    refs = {f.get(f"{{{OVF}}}id"): f for f in root.iter(q("ovf", "File"))}
    assert {f.get(f"{{{OVF}}}href") for f in refs.values()} == set(files)
    for f in refs.values():
        assert int(f.get(f"{{{OVF}}}size")) == files[f.get(f"{{{OVF}}}href")]
        assert f.get(f"{{{OVF}}}compression") is None  # vSphere refuses compressed files
    disks = {d.get(f"{{{OVF}}}diskId"): d for d in root.iter(q("ovf", "Disk"))}
    for d in disks.values():
        assert d.get(f"{{{OVF}}}fileRef") in refs
        assert int(d.get(f"{{{OVF}}}capacity")) == DISK_SIZE
        assert d.get(f"{{{OVF}}}format") == VMDK_STREAM_FORMAT
    networks = {n.get(f"{{{OVF}}}name") for n in root.iter(q("ovf", "Network"))}
    items = list(root.iter(q("ovf", "Item")))
    ids = [i.findtext(f"{{{RASD}}}InstanceID") for i in items]
    assert len(ids) == len(set(ids))
    by_type: dict[int, list[ET.Element]] = {}
    for i in items:
        by_type.setdefault(int(i.findtext(f"{{{RASD}}}ResourceType")), []).append(i)
        if int(i.findtext(f"{{{RASD}}}ResourceType")) not in {3, 4, 5, 6, 10, 14, 15, 17, 20, 23, 35}:
            assert i.get(f"{{{OVF}}}required") == "false"  # else VirtualBox aborts: unknown resource type
    assert by_type[3][0].findtext(f"{{{RASD}}}VirtualQuantity") == "2"
    assert by_type[4][0].findtext(f"{{{RASD}}}VirtualQuantity") == "1024"
    assert by_type[4][0].findtext(f"{{{RASD}}}AllocationUnits") == "byte * 2^20"
    controllers = {i.findtext(f"{{{RASD}}}InstanceID") for t in (5, 6, 20) for i in by_type.get(t, [])}
    for disk in by_type[17]:
        assert disk.findtext(f"{{{RASD}}}Parent") in controllers
        assert disk.findtext(f"{{{RASD}}}HostResource").removeprefix("ovf:/disk/") in disks
    for nic in by_type[10]:
        assert nic.findtext(f"{{{RASD}}}Connection") in networks
    vst = root.find(f".//{{{NS['vssd']}}}VirtualSystemType").text
    os_section = root.find(f".//{q('ovf', 'OperatingSystemSection')}")
    assert int(os_section.get(f"{{{OVF}}}id")) == 96  # Debian 64-bit
    if vmware:
        assert vst == "vmx-13"
        assert os_section.get(q("vmw", "osType")).startswith("debian")
    return root
