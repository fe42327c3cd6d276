"""Vagrant boxes (libvirt or virtualbox provider) and a versioned box catalog.

libvirt box: `box.img` (qcow2), `metadata.json` with `format` and an integer `virtual_size` in GiB
(vagrant-libvirt uses it as the volume capacity, so it is rounded up), and a Vagrantfile.
virtualbox box: `box.ovf` + streamOptimized VMDK + `metadata.json` + a Vagrantfile that sets
`base_mac` (Vagrant aborts with VMBaseMacNotSpecified without it).
The catalog `<name>.box.json` lets `vagrant box add <catalog>` verify the checksum and track versions;
it is refreshed in place, keeping the other versions and providers listed in an earlier one.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    GiB,
    Staging,
    VMSpec,
    gzip_flags,
    help_field,
    master_info,
)
from baker.export.derived import copy_file
from baker.export.ovf import OvfDisk, build_descriptor
from baker.export.qcow2 import qcow2_entry
from baker.export.vmdk import write_vmdk
from baker.fsutil import file_digest
from baker.proc import run

_MAC = re.compile(r"^[0-9A-Fa-f]{12}$")
# RubyGems version syntax; Vagrant raises BoxMetadataMalformedVersion otherwise
_GEM_VERSION = re.compile(r"^[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")


@dataclass
class VagrantOptions:
    provider: Literal["libvirt", "virtualbox"] = help_field("libvirt", "Vagrant provider the box is for")
    filename: str | None = help_field(
        None, "box file name (default: <name>-<version>-<provider>.box, so older versions in the catalog "
        "keep their files)")
    box_name: str | None = help_field(None, "box name in the catalog, e.g. acme/debian12 (default: <name>)")
    catalog: bool = help_field(True, "also write/refresh the versioned catalog <name>.box.json")
    catalog_filename: str | None = help_field(None, "catalog file name (default: <name>.box.json)")
    box_url: str | None = help_field(
        None, "URL the catalog gives for the box, e.g. https://boxes.example.com/x.box "
        "(default: file:// URL of the box in output_dir)")
    base_mac: str | None = help_field(
        None, "virtualbox: MAC of the first NIC, 12 hex digits (default: 080027 + a hash of the name)")
    compress: bool = help_field(
        True, "a gzip'd tar (.box as Vagrant Cloud serves them); the disk inside is compressed either way, "
        "so the gzip layer stores it; off writes a plain tar")


_catalog_locks: dict[Path, threading.Lock] = {}
_catalog_locks_guard = threading.Lock()


def _catalog_lock(path: Path) -> threading.Lock:
    with _catalog_locks_guard:
        return _catalog_locks.setdefault(path.resolve(), threading.Lock())


def base_mac_for(vm: VMSpec) -> str:
    """A stable VirtualBox-OUI MAC derived from the image name, so rebuilds keep it."""
    return "080027" + hashlib.sha256(vm.name.encode()).hexdigest()[:6].upper()


def libvirt_vagrantfile(vm: VMSpec) -> str:
    lines = ['  config.vm.provider :libvirt do |libvirt|', '    libvirt.driver = "kvm"',
             f"    libvirt.cpus = {vm.cpus}", f"    libvirt.memory = {vm.memory_mb}",
             f'    libvirt.machine_type = "{vm.machine_type}"']
    if vm.firmware == "uefi":
        # loader only: libvirt then creates a per-domain NVRAM from its own template
        lines.append('    libvirt.loader = "/usr/share/OVMF/OVMF_CODE_4M.fd"')
    lines.append("  end")
    return 'Vagrant.configure("2") do |config|\n' + "\n".join(lines) + "\nend\n"


def virtualbox_vagrantfile(vm: VMSpec, mac: str) -> str:
    return (f'Vagrant.configure("2") do |config|\n  config.vm.base_mac = "{mac}"\n'
            f"  config.vm.provider :virtualbox do |vb|\n    vb.cpus = {vm.cpus}\n"
            f"    vb.memory = {vm.memory_mb}\n  end\nend\n")


def update_catalog(existing: Path, *, name: str, description: str, version: str, provider: str, url: str,
                   sha256: str) -> dict[str, Any]:
    """Merge this box into the catalog at `existing` (if any): same version+provider is replaced."""
    catalog: dict[str, Any] = {"name": name, "description": description, "versions": []}
    if existing.is_file():
        try:
            old = json.loads(existing.read_text())
            if old.get("name") == name and isinstance(old.get("versions"), list):
                catalog["versions"] = old["versions"]
        except ValueError:
            pass  # unreadable old catalog: start a new one
    entry = {"name": provider, "url": url, "checksum_type": "sha256", "checksum": sha256}
    for v in catalog["versions"]:
        if v.get("version") == version:
            v["providers"] = [p for p in v.get("providers", []) if p.get("name") != provider] + [entry]
            break
    else:
        catalog["versions"].append({"version": version, "providers": [entry]})
    return catalog


class VagrantExporter(BaseExporter):
    type_name = "vagrant"
    Options: ClassVar[type] = VagrantOptions

    def outputs(self, vm: VMSpec, options: Any) -> list[str]:
        names = [options.filename or f"{vm.name}-{vm.version}-{options.provider}.box"]
        if options.catalog:
            names.append(options.catalog_filename or f"{vm.name}.box.json")
        return names

    def shared_outputs(self, vm: VMSpec, options: Any) -> list[str]:
        return self.outputs(vm, options)[1:]

    def validate(self, vm: VMSpec, options: Any) -> None:
        if options.base_mac is not None and not _MAC.match(options.base_mac):
            raise ExportError(f"export vagrant: base_mac '{options.base_mac}' must be 12 hex digits")
        if options.catalog and not _GEM_VERSION.match(vm.version):
            raise ExportError(f"export vagrant: version '{vm.version}' is not a version Vagrant accepts",
                              hint="use numbers separated by dots, such as 1.2.0")

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        vm = ctx.vm
        names = self.outputs(vm, options)
        box_dir = scratch / "box"
        box_dir.mkdir()
        if options.provider == "libvirt":
            # the compressed qcow2 (shared with a compressed qcow2 export): vagrant-libvirt reads it as is
            copy_file(qcow2_entry(ctx, compress=True), box_dir / "box.img")
            size_gb = -(-master_info(ctx)[1] // GiB)
            meta = {"provider": "libvirt", "format": "qcow2", "virtual_size": size_gb}
            vagrantfile = libvirt_vagrantfile(vm)
            members = ["metadata.json", "Vagrantfile", "box.img"]
        else:
            disk = box_dir / "box-disk001.vmdk"
            write_vmdk(ctx, disk, adapter_type="ide")
            ovf = build_descriptor(vm, OvfDisk(disk.name, disk.stat().st_size, master_info(ctx)[1]),
                                   flavor="virtualbox", virtual_system_type="virtualbox-2.2",
                                   controller="sata", network="NAT")
            (box_dir / "box.ovf").write_text(ovf)
            meta = {"provider": "virtualbox"}
            vagrantfile = virtualbox_vagrantfile(vm, (options.base_mac or base_mac_for(vm)).upper())
            members = ["metadata.json", "Vagrantfile", "box.ovf", disk.name]
        (box_dir / "metadata.json").write_text(json.dumps(meta) + "\n")
        (box_dir / "Vagrantfile").write_text(vagrantfile)
        box = stage.path(names[0], "box", "box")
        # the disk inside is compressed already (qcow2 clusters, VMDK grains): deflating it again saved 2%
        # for 5 CPU-seconds per box here, so the gzip layer only stores it (pigz -0; gzip without pigz)
        flags = gzip_flags(ctx, level=0) if options.compress else []
        run(["tar", "--format=gnu", "--owner=0", "--group=0", "--numeric-owner", *flags, "-cf", box,
             "-C", box_dir, *members], hint="install GNU tar")
        if options.catalog:
            # other vagrant exports (other providers) may update the same catalog: one at a time
            stage.hold(_catalog_lock(stage.final(names[1])))
            final = stage.final(names[0]).resolve()
            catalog = update_catalog(
                stage.final(names[1]), name=options.box_name or vm.name, description=vm.description,
                version=vm.version, provider=options.provider, url=options.box_url or final.as_uri(),
                sha256=file_digest(box))
            stage.path(names[1], "metadata", "json").write_text(json.dumps(catalog, indent=2) + "\n")
