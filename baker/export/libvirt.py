"""libvirt: a domain XML beside its disk, ready for `virsh define`.

libvirt's schema only accepts an absolute disk path (a relative one fails `define --validate`), so the
XML names the disk by the absolute path it has in output_dir, or by `disk_path` when the image will be
copied elsewhere (e.g. /var/lib/libvirt/images/<name>.qcow2) before defining the domain.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal
from xml.sax.saxutils import escape, quoteattr

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    Staging,
    VMSpec,
    convert,
    help_field,
)
from baker.export.osmap import os_ids
from baker.export.qcow2 import write_qcow2
from baker.fsutil import file_digest

BAKER_XMLNS = "urn:x-baker:image:1"
LIBOSINFO_XMLNS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
# template disk_interface -> (libvirt bus, device name)
_BUSES = {"virtio": ("virtio", "vda"), "virtio-scsi": ("scsi", "sda"), "sata": ("sata", "sda"),
          "ide": ("ide", "hda")}


@dataclass
class LibvirtOptions:
    filename: str | None = help_field(None, "domain XML file name (default: <name>.xml)")
    disk_filename: str | None = help_field(
        None, "disk file name (default: <name>-libvirt.qcow2 or .raw, apart from the qcow2/raw exports)")
    disk_format: Literal["qcow2", "raw"] = help_field(
        "qcow2", "disk format; the XML's driver type matches it")
    compress: bool = help_field(False, "compress the qcow2 disk (zlib)")
    disk_path: str | None = help_field(
        None, "absolute path the XML gives for the disk (default: the disk's absolute path in output_dir)")
    domain_type: Literal["kvm", "qemu"] = help_field("kvm", "kvm; or qemu for hosts without KVM")
    network: str = help_field("default", "libvirt network the virtio NIC joins")
    uefi_loader: str = help_field("/usr/share/OVMF/OVMF_CODE_4M.fd", "OVMF code image for uefi firmware")
    uefi_vars_template: str = help_field("/usr/share/OVMF/OVMF_VARS_4M.fd", "OVMF variable store template")
    arch: str = help_field("x86_64", "guest architecture")


def domain_xml(vm: VMSpec, options: Any, disk_path: str, sha256: str, log: Any = None) -> str:
    """The domain definition; everything host-specific (emulator path, UUID, MAC) is left to libvirt."""
    bus, dev = _BUSES.get(vm.disk_interface, ("virtio", "vda"))
    q35 = "q35" in vm.machine_type
    if bus == "ide" and q35:
        bus, dev = "sata", "sda"  # q35 has no IDE controller
        if log:
            log.warning("export libvirt: q35 has no IDE bus; the disk is attached to SATA")
    controller = "\n    <controller type='scsi' model='virtio-scsi'/>" if bus == "scsi" else ""
    if vm.firmware == "uefi":
        fw = (f"\n    <loader readonly='yes' type='pflash'>{escape(options.uefi_loader)}</loader>"
              f"\n    <nvram template={quoteattr(options.uefi_vars_template)}/>")
    else:
        fw = ""
    osinfo = os_ids(vm.os_type).libosinfo
    osinfo_xml = (f"\n    <libosinfo:libosinfo xmlns:libosinfo='{LIBOSINFO_XMLNS}'>"
                  f"<libosinfo:os id={quoteattr(osinfo)}/></libosinfo:libosinfo>") if osinfo else ""
    desc = f"\n  <description>{escape(vm.description)}</description>" if vm.description else ""
    smm = "<smm state='on'/>" if vm.firmware == "uefi" and q35 else ""
    return f"""<domain type='{options.domain_type}'>
  <name>{escape(vm.name)}</name>{desc}
  <metadata>
    <baker:image xmlns:baker='{BAKER_XMLNS}'>
      <baker:version>{escape(vm.version)}</baker:version>
      <baker:format>{options.disk_format}</baker:format>
      <baker:sha256>{sha256}</baker:sha256>
    </baker:image>{osinfo_xml}
  </metadata>
  <memory unit='MiB'>{vm.memory_mb}</memory>
  <currentMemory unit='MiB'>{vm.memory_mb}</currentMemory>
  <vcpu placement='static'>{vm.cpus}</vcpu>
  <os>
    <type arch={quoteattr(options.arch)} machine={quoteattr(vm.machine_type)}>hvm</type>{fw}
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/>{smm}</features>
  <cpu mode='host-model'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>{controller}
    <disk type='file' device='disk'>
      <driver name='qemu' type='{options.disk_format}' discard='unmap'/>
      <source file={quoteattr(disk_path)}/>
      <target dev='{dev}' bus='{bus}'/>
    </disk>
    <interface type='network'>
      <source network={quoteattr(options.network)}/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
    <video><model type='virtio'/></video>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""


class LibvirtExporter(BaseExporter):
    type_name = "libvirt"
    Options: ClassVar[type] = LibvirtOptions

    def outputs(self, vm: VMSpec, options: Any) -> list[str]:
        return [options.disk_filename or f"{vm.name}-libvirt.{options.disk_format}",
                options.filename or f"{vm.name}.xml"]

    def validate(self, vm: VMSpec, options: Any) -> None:
        if options.disk_path is not None and not PurePosixPath(options.disk_path).is_absolute():
            raise ExportError("export libvirt: disk_path must be absolute",
                              hint="libvirt rejects relative disk paths")
        if options.compress and options.disk_format != "qcow2":
            raise ExportError("export libvirt: compress needs disk_format qcow2")
        if vm.firmware not in ("bios", "uefi"):
            raise ExportError(f"export libvirt: unknown firmware '{vm.firmware}'")

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        disk_name, xml_name = self.outputs(ctx.vm, options)
        disk = stage.path(disk_name, "disk", options.disk_format)
        if options.disk_format == "qcow2":
            write_qcow2(ctx, disk, compress=options.compress)
        else:
            convert(ctx, disk, "raw")
        path = options.disk_path or str(stage.final(disk_name).resolve())
        text = domain_xml(ctx.vm, options, path, file_digest(disk), ctx.log)
        ET.fromstring(text)
        stage.path(xml_name, "descriptor", "xml").write_text(text)
