"""OVF 1.0 descriptor, manifest and OVA, for VMware (vSphere/ESXi/Workstation) and VirtualBox alike.

The descriptor validates against the DMTF DSP8023 + CIM schemas (RASD/VSSD children in schema order)
and keeps to what both importers accept: `vmx-NN` hardware family (configurable, vmx-13 = ESXi 6.5),
full `ovf:format` URL, no `ovf:compression`, memory in `byte * 2^20`, and `ovf:required="false"` on
every item VirtualBox does not know (video, VMware config) so it does not abort the import.
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from xml.sax.saxutils import escape, quoteattr

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    Staging,
    VMSpec,
    help_field,
    master_info,
    tar_epoch,
)
from baker.export.osmap import os_ids
from baker.export.vmdk import write_vmdk
from baker.fsutil import file_digest

NS = {
    "": "http://schemas.dmtf.org/ovf/envelope/1",
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "cim": "http://schemas.dmtf.org/wbem/wscim/1/common",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "vmw": "http://www.vmware.com/schema/ovf",
    "vbox": "http://www.virtualbox.org/ovf/machine",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
VMDK_STREAM_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
USTAR_LIMIT = 8 << 30  # a ustar size field holds 11 octal digits

# controller -> (ResourceType, subtype for VMware, subtype for VirtualBox, ddb.adapterType)
_CONTROLLERS: dict[str, tuple[int, str | None, str | None, str]] = {
    "lsilogic": (6, "lsilogic", "lsilogic", "lsilogic"),
    "lsilogicsas": (6, "lsilogicsas", "lsilogicsas", "lsilogic"),
    "buslogic": (6, "buslogic", "buslogic", "buslogic"),
    "pvscsi": (6, "VirtualSCSI", "VirtualSCSI", "lsilogic"),
    "ide": (5, None, "PIIX4", "ide"),
    "sata": (20, "vmware.sata.ahci", "AHCI", "ide"),
}


def adapter_for(controller: str) -> str:
    """The VMDK ddb.adapterType that matches an OVF disk controller."""
    return _CONTROLLERS[controller][3]


@dataclass(frozen=True)
class OvfDisk:
    href: str  # file name inside the package
    file_size: int
    capacity: int  # virtual size in bytes


def _rasd(fields: list[tuple[str, str | int | None]]) -> str:
    """RASD children; callers pass them in the schema's (alphabetical) order."""
    return "".join(f"<rasd:{k}>{escape(str(v))}</rasd:{k}>" for k, v in fields if v is not None)


def build_descriptor(vm: VMSpec, disk: OvfDisk, *, flavor: Literal["vmware", "virtualbox"] = "vmware",
                     virtual_system_type: str = "vmx-13", controller: str = "lsilogic",
                     nic_type: str = "E1000", network: str = "VM Network",
                     vmware_os_type: str | None = None, os_id: int | None = None) -> str:
    """The OVF 1.0 envelope for one VM with one disk and one NIC."""
    ids = os_ids(vm.os_type)
    rtype, vmw_sub, vbox_sub, _ = _CONTROLLERS[controller]
    sub = vmw_sub if flavor == "vmware" else vbox_sub
    name = vm.name
    items = [
        ("", _rasd([("AllocationUnits", "hertz * 10^6"), ("Description", "Number of Virtual CPUs"),
                    ("ElementName", f"{vm.cpus} virtual CPU(s)"), ("InstanceID", 1), ("ResourceType", 3),
                    ("VirtualQuantity", vm.cpus)])),
        ("", _rasd([("AllocationUnits", "byte * 2^20"), ("Description", "Memory Size"),
                    ("ElementName", f"{vm.memory_mb}MB of memory"), ("InstanceID", 2), ("ResourceType", 4),
                    ("VirtualQuantity", vm.memory_mb)])),
        ("", _rasd([("Address", 0), ("Description", f"{controller} controller"),
                    ("ElementName", f"{controller} controller 0"), ("InstanceID", 3),
                    ("ResourceSubType", sub), ("ResourceType", rtype)])),
        ("", _rasd([("AddressOnParent", 0), ("ElementName", "Hard Disk 1"),
                    ("HostResource", "ovf:/disk/vmdisk1"), ("InstanceID", 4), ("Parent", 3),
                    ("ResourceType", 17)])),
        ("", _rasd([("AddressOnParent", 7), ("AutomaticAllocation", "true"), ("Connection", network),
                    ("Description", f'{nic_type} ethernet adapter on "{network}"'),
                    ("ElementName", "Ethernet 1"), ("InstanceID", 5), ("ResourceSubType", nic_type),
                    ("ResourceType", 10)])),
        (' ovf:required="false"', _rasd([("AutomaticAllocation", "false"), ("ElementName", "Video card"),
                                          ("InstanceID", 6), ("ResourceType", 24)])),
    ]
    hw_items = "\n".join(f"      <Item{attrs}>{body}</Item>" for attrs, body in items)
    if flavor == "vmware":
        firmware = "efi" if vm.firmware == "uefi" else "bios"
        hw_items += f'\n      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>'
        os_attr = f" vmw:osType={quoteattr(vmware_os_type or ids.vmware)}"
    else:
        os_attr = ""
    annotation = ""
    if vm.description:
        annotation = (f"    <AnnotationSection>\n      <Info>A description of the virtual machine</Info>\n"
                      f"      <Annotation>{escape(vm.description)}</Annotation>\n    </AnnotationSection>\n")
    ns = " ".join(f'xmlns{":" + k if k else ""}="{v}"' for k, v in NS.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" {ns}>
  <References>
    <File ovf:href={quoteattr(disk.href)} ovf:id="file1" ovf:size="{disk.file_size}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks</Info>
    <Disk ovf:capacity="{disk.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" \
ovf:fileRef="file1" ovf:format="{VMDK_STREAM_FORMAT}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name={quoteattr(network)}><Description>The {escape(network)} network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id={quoteattr(name)}>
    <Info>A virtual machine</Info>
    <Name>{escape(name)}</Name>
    <OperatingSystemSection ovf:id="{ids.cim if os_id is None else os_id}"{os_attr}>
      <Info>The kind of installed guest operating system</Info>
      <vbox:OSType ovf:required="false">{ids.virtualbox}</vbox:OSType>
    </OperatingSystemSection>
    <ProductSection>
      <Info>Information about the installed software</Info>
      <Product>{escape(name)}</Product>
      <Version>{escape(vm.version)}</Version>
    </ProductSection>
{annotation}    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{escape(virtual_system_type)}</vssd:VirtualSystemType>
      </System>
{hw_items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


# --- manifest --------------------------------------------------------------------------------------

_MF_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\(([^)]+)\)= ([0-9a-f]+)$")


def manifest(paths: list[Path], algorithm: str = "SHA256") -> str:
    """`SHA256(name)= hex` lines, VMware's exact spelling (not coreutils' --tag, not OpenSSL 3's SHA2-256)."""
    return "".join(f"{algorithm}({p.name})= {file_digest(p, algorithm.lower())}\n" for p in paths)


def parse_manifest(text: str) -> dict[str, tuple[str, str]]:
    """name -> (algorithm, hex); raises ValueError on a line VMware would reject."""
    out = {}
    for line in text.splitlines():
        m = _MF_LINE.match(line)
        if not m:
            raise ValueError(f"bad manifest line: {line!r}")
        out[m.group(2)] = (m.group(1), m.group(3))
    return out


def write_ova(dest: Path, members: list[Path]) -> None:
    """Uncompressed tar, members in the given order (descriptor, manifest, disks), root-owned 0644.

    ustar as the OVF spec says; GNU format only when a member is too big for ustar's size field.
    """
    fmt = tarfile.USTAR_FORMAT if all(p.stat().st_size < USTAR_LIMIT for p in members) else tarfile.GNU_FORMAT
    mtime = tar_epoch()
    with tarfile.open(dest, "w", format=fmt) as tf:
        for p in members:
            ti = tf.gettarinfo(p, arcname=p.name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mode = 0o644
            ti.mtime = mtime
            with open(p, "rb") as fh:
                tf.addfile(ti, fh)


# --- exporters -------------------------------------------------------------------------------------

@dataclass
class OvfOptions:
    filename: str | None = help_field(
        None, "descriptor name (default: <name>.ovf; the disk is <name>-disk1.vmdk)")
    virtual_system_type: str = help_field(
        "vmx-13", "hardware family; must not be newer than the oldest ESXi you deploy to "
        "(vmx-13 ESXi 6.5, vmx-14 6.7, vmx-17 7.0, vmx-20 8.0)")
    disk_controller: Literal["lsilogic", "lsilogicsas", "buslogic", "pvscsi", "ide", "sata"] = help_field(
        "lsilogic", "disk controller; lsilogic works on VMware and VirtualBox without extra drivers")
    nic_type: Literal["E1000", "E1000e", "VmxNet3", "PCNet32", "VirtioNet"] = help_field(
        "E1000", "NIC model; E1000 is understood by both VMware and VirtualBox")
    network: str = help_field("VM Network", "network name the NIC connects to (VMware's default port group)")
    manifest_algorithm: Literal["SHA256", "SHA512", "SHA1"] = help_field(
        "SHA256", "manifest digest; SHA1 only for ESXi < 6.0 (vSphere 8 rejects it)")
    toolsversion: int = help_field(
        2147483647, "ddb.toolsVersion of the VMDK (2147483647: guest-managed tools)")
    vmware_os_type: str | None = help_field(
        None, "vmw:osType guest id (default: derived from the image's OS)")
    os_id: int | None = help_field(None, "CIM OperatingSystemSection ovf:id (default: derived from the OS)")


@dataclass
class OvaOptions(OvfOptions):
    filename: str | None = help_field(None, "output file name (default: <name>.ova)")


def _check_ovf_options(type_name: str, options: Any) -> int:
    """Validate and return the VMDK hwversion implied by virtual_system_type."""
    m = re.fullmatch(r"vmx-(\d+)", options.virtual_system_type)
    if not m:
        raise ExportError(f"export {type_name}: virtual_system_type '{options.virtual_system_type}' "
                          "must look like vmx-13", hint="VMware rejects other families, e.g. virtualbox-2.2")
    hw = int(m.group(1))
    if options.disk_controller == "sata" and hw < 10:
        raise ExportError(f"export {type_name}: a SATA controller needs vmx-10 or newer")
    if options.os_id is not None and not 0 <= options.os_id <= 65535:
        raise ExportError(f"export {type_name}: os_id must be between 0 and 65535")
    if not options.network.strip():
        raise ExportError(f"export {type_name}: network must not be empty")
    if not 4 <= hw <= 99 or options.toolsversion < 0:
        raise ExportError(f"export {type_name}: vmx-{hw} or toolsversion {options.toolsversion} out of range")
    return hw


def write_package(ctx: ExportContext, options: Any, hwversion: int, ovf: Path, mf: Path, vmdk: Path,
                  flavor: Literal["vmware", "virtualbox"] = "vmware") -> None:
    """Disk, then descriptor (needs the disk's size), then manifest (needs both)."""
    write_vmdk(ctx, vmdk, adapter_type=adapter_for(options.disk_controller), hwversion=hwversion,
               toolsversion=options.toolsversion)
    text = build_descriptor(
        ctx.vm, OvfDisk(vmdk.name, vmdk.stat().st_size, master_info(ctx)[1]), flavor=flavor,
        virtual_system_type=options.virtual_system_type, controller=options.disk_controller,
        nic_type=options.nic_type, network=options.network, vmware_os_type=options.vmware_os_type,
        os_id=options.os_id)
    ET.fromstring(text.encode())  # well-formed, or fail here rather than in an importer
    ovf.write_text(text)
    mf.write_text(manifest([ovf, vmdk], options.manifest_algorithm))


class OvfExporter(BaseExporter):
    """An unpacked OVF: descriptor, manifest and disk side by side (for ovftool, vCenter 'upload files')."""

    type_name = "ovf"
    Options: ClassVar[type] = OvfOptions

    def outputs(self, vm: VMSpec, options: Any) -> list[str]:
        ovf = options.filename or f"{vm.name}.ovf"
        return [ovf, f"{ovf.removesuffix('.ovf')}.mf", f"{vm.name}-disk1.vmdk"]

    def validate(self, vm: VMSpec, options: Any) -> None:
        _check_ovf_options(self.type_name, options)

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        hw = _check_ovf_options(self.type_name, options)
        ovf, mf, disk = self.outputs(ctx.vm, options)
        write_package(ctx, options, hw, stage.path(ovf, "descriptor", "ovf"),
                      stage.path(mf, "manifest", "mf"), stage.path(disk, "disk", "vmdk"))


class OvaExporter(BaseExporter):
    """One .ova file: ustar with the descriptor first, then the manifest, then the disk (VirtualBox reads
    OVAs forward-only and VMware wants the .ovf first)."""

    type_name = "ova"
    Options: ClassVar[type] = OvaOptions
    suffix = ".ova"

    def validate(self, vm: VMSpec, options: Any) -> None:
        _check_ovf_options(self.type_name, options)

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        hw = _check_ovf_options(self.type_name, options)
        (name,) = self.outputs(ctx.vm, options)
        base = ctx.vm.name
        ovf, mf, disk = scratch / f"{base}.ovf", scratch / f"{base}.mf", scratch / f"{base}-disk1.vmdk"
        write_package(ctx, options, hw, ovf, mf, disk)
        write_ova(stage.path(name, "ova", "ova"), [ovf, mf, disk])
