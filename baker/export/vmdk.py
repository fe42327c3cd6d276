"""VMDK for VMware (and the disk inside OVA/OVF and VirtualBox boxes).

streamOptimized is what OVA and vSphere deploys want. The header must be version 3 (ESXi: "sparse
VMDK version too old"), and the file must end right after the end-of-stream marker: qemu pads after
it, and streaming consumers (ovftool, vSphere Content Library) stop reading at EOS and then report
digest mismatches or broken pipes. It is written from the run's compressed qcow2 (vmdkstream.py),
whose deflated clusters are the grains, instead of deflating the disk a second time; qemu-img makes it
only when that qcow2 cannot be transcoded, and makes monolithicSparse.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    Staging,
    VMSpec,
    convert,
    help_field,
)
from baker.export.derived import copy_file
from baker.export.qcow2 import qcow2_entry
from baker.export.vmdkstream import (
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    HEADER,
    MARKER_EOS,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    SECTOR,
    ddb_values,
    qcow2_to_stream,
    transcode_blocker,
)


@dataclass(frozen=True)
class VmdkHeader:
    version: int
    flags: int
    capacity: int  # sectors
    grain_size: int  # sectors
    descriptor_offset: int
    descriptor_size: int
    gd_offset: int
    overhead: int  # sectors before the first grain
    compress_algorithm: int
    descriptor: str

    @property
    def stream_optimized(self) -> bool:
        return bool(self.flags & FLAG_MARKERS)

    def ddb(self, key: str) -> str | None:
        """A value from the embedded descriptor, e.g. ddb("ddb.adapterType") or ddb("createType")."""
        m = re.search(rf'^{re.escape(key)}\s*=\s*"([^"]*)"', self.descriptor, re.MULTILINE)
        return m.group(1) if m else None


def read_header(path: Path) -> VmdkHeader:
    """Parse the sparse extent header and its embedded descriptor (sector 0 and descriptorOffset)."""
    with open(path, "rb") as f:
        raw = f.read(SECTOR)
        if len(raw) < HEADER.size:
            raise ExportError(f"{path.name}: too short for a VMDK header")
        (magic, version, flags, capacity, grain, d_off, d_size, _gtes, _rgd, gd, overhead, _unclean,
         _n1, _s, _r, _n2, algo) = HEADER.unpack_from(raw)
        if magic != b"KDMV":
            raise ExportError(f"{path.name}: not a sparse VMDK (magic {magic!r})")
        f.seek(d_off * SECTOR)
        descriptor = f.read(d_size * SECTOR).split(b"\0", 1)[0].decode("utf-8", "replace")
    return VmdkHeader(version, flags, capacity, grain, d_off, d_size, gd, overhead, algo, descriptor)


@dataclass(frozen=True)
class StreamInfo:
    grains: int
    eos_sector: int
    file_size: int

    @property
    def trailing_bytes(self) -> int:
        return self.file_size - (self.eos_sector + 1) * SECTOR


def walk_stream(path: Path, *, inflate: bool = False) -> StreamInfo:
    """Follow the grain and metadata markers of a streamOptimized VMDK up to the end-of-stream marker.

    With `inflate`, every grain is decompressed too (a test-time integrity check).
    """
    header = read_header(path)
    if not header.stream_optimized:
        raise ExportError(f"{path.name}: not streamOptimized")
    size = path.stat().st_size
    grains = 0
    with open(path, "rb") as f:
        sector = header.overhead
        while True:
            f.seek(sector * SECTOR)
            marker = f.read(SECTOR)
            if len(marker) < 16:
                raise ExportError(f"{path.name}: no end-of-stream marker before the end of the file")
            value, length = struct.unpack_from("<QI", marker)
            if length:  # a grain: lba, compressed size, deflate data, padded to a sector
                if inflate:
                    f.seek(sector * SECTOR + 12)
                    data = zlib.decompress(f.read(length))
                    if len(data) > header.grain_size * SECTOR:
                        raise ExportError(f"{path.name}: grain at sector {sector} inflates too large")
                grains += 1
                sector += -(-(12 + length) // SECTOR)
                continue
            kind = struct.unpack_from("<I", marker, 12)[0]
            if kind == MARKER_EOS:
                return StreamInfo(grains, sector, size)
            if kind not in (MARKER_GT, MARKER_GD, MARKER_FOOTER):
                raise ExportError(f"{path.name}: unknown marker type {kind} at sector {sector}")
            sector += 1 + value


def trim_after_eos(path: Path) -> StreamInfo:
    """Cut qemu's padding after the EOS marker; refuses if anything but zeros follows it."""
    info = walk_stream(path)
    if info.trailing_bytes > 0:
        with open(path, "rb") as f:
            f.seek((info.eos_sector + 1) * SECTOR)
            while chunk := f.read(1 << 20):
                if chunk.count(0) != len(chunk):
                    raise ExportError(f"{path.name}: data after the end-of-stream marker; not trimming")
        os.truncate(path, (info.eos_sector + 1) * SECTOR)
    return StreamInfo(info.grains, info.eos_sector, (info.eos_sector + 1) * SECTOR)


def _transcoded(ctx: ExportContext, path: Path) -> bool:
    """Write the streamOptimized VMDK from the run's compressed qcow2 (shared with the qcow2, libvirt and
    Vagrant libvirt exports); False when that qcow2 cannot be transcoded."""
    source = qcow2_entry(ctx, compress=True)
    if why := transcode_blocker(source):
        ctx.log.debug("vmdk: converting with qemu-img: the compressed qcow2 %s", why)
        return False
    done = qcow2_to_stream(source, path)
    ctx.log.debug("%s: %d grains from the compressed qcow2 (%d deflate streams reused, %d deflated)",
                  path.name, done.grains, done.copied, done.deflated)
    return True


def vmdk_entry(ctx: ExportContext, subformat: str = "streamOptimized") -> Path:
    """The run's VMDK of the master in `subformat`, made (and for streamOptimized, checked and trimmed)
    once; every user copies it and rewrites the embedded descriptor (`write_vmdk`)."""
    assert ctx.derived is not None

    def make(path: Path) -> None:
        if subformat != "streamOptimized" or not _transcoded(ctx, path):
            convert(ctx, path, "vmdk", {"subformat": subformat, "adapter_type": "lsilogic"})
        if subformat == "streamOptimized":
            header = read_header(path)
            if header.version != 3 or header.flags & (FLAG_COMPRESSED | FLAG_MARKERS) != (
                    FLAG_COMPRESSED | FLAG_MARKERS):
                raise ExportError(f"{path.name}: streamOptimized header is version {header.version}, "
                                  f"flags {header.flags:#x}; ESXi needs version 3, compressed grains, "
                                  "markers", hint="upgrade qemu-utils (qemu >= 2.5.1 writes version 3)")
            trimmed = trim_after_eos(path)
            ctx.log.debug("%s: %d grains, EOS at sector %d", path.name, trimmed.grains, trimmed.eos_sector)

    return ctx.derived.get(("vmdk", subformat), make, ".vmdk")


def _set_ddb(text: str, key: str, value: str | int) -> str:
    line = f'{key} = "{value}"'
    pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(lambda _: line, text, count=1)
    return text.rstrip("\n") + "\n" + line + "\n"


def rewrite_descriptor(path: Path, *, adapter_type: str, hwversion: int, toolsversion: int) -> None:
    """Set the embedded descriptor as qemu-img would have written it for this file name and these
    options (extent name, adapter, CHS geometry, hardware and tools versions); the grains, which
    do not depend on them, stay as they are."""
    header = read_header(path)
    text = header.descriptor
    text, n = re.subn(r'^(RW \d+ \w+ )"[^"]*"', lambda m: f'{m.group(1)}"{path.name}"', text, count=1,
                      flags=re.MULTILINE)
    if n != 1:
        raise ExportError(f"{path.name}: no extent line in the embedded descriptor")
    for key, value in ddb_values(header.capacity, adapter_type=adapter_type, hwversion=hwversion,
                                 toolsversion=toolsversion):
        text = _set_ddb(text, key, value)
    data = text.encode()
    room = header.descriptor_size * SECTOR
    if not header.descriptor_offset or len(data) > room:
        raise ExportError(f"{path.name}: the descriptor does not fit its {room} bytes")
    with open(path, "r+b") as f:
        f.seek(header.descriptor_offset * SECTOR)
        f.write(data + bytes(room - len(data)))


def write_vmdk(ctx: ExportContext, dest: Path, *, subformat: str = "streamOptimized",
               adapter_type: str = "lsilogic", hwversion: int = 13, toolsversion: int = 2147483647) -> None:
    """A VMDK of the master at `dest` (named as it will ship: the descriptor names the file)."""
    copy_file(vmdk_entry(ctx, subformat), dest)
    rewrite_descriptor(dest, adapter_type=adapter_type, hwversion=hwversion, toolsversion=toolsversion)
    header = read_header(dest)
    if header.ddb("ddb.toolsVersion") is None or header.ddb("createType") != subformat:
        raise ExportError(f"{dest.name}: descriptor lacks ddb.toolsVersion or createType {subformat}")


@dataclass
class VmdkOptions:
    filename: str | None = help_field(None, "output file name (default: <name>.vmdk)")
    subformat: Literal["streamOptimized", "monolithicSparse"] = help_field(
        "streamOptimized", "streamOptimized for vSphere/ESXi/OVA and AWS import; monolithicSparse for "
        "Workstation/Fusion/VirtualBox attaching the disk directly (not for ESXi datastores)")
    adapter_type: Literal["ide", "lsilogic", "buslogic", "legacyESX"] = help_field(
        "lsilogic", "ddb.adapterType: the controller the disk expects (qemu-img accepts ide, lsilogic, "
        "buslogic, legacyESX; use lsilogic for pvscsi/SAS controllers too)")
    hwversion: int = help_field(13, "ddb.virtualHWVersion; keep it equal to the VM's vmx-NN (13 = ESXi 6.5)")
    toolsversion: int = help_field(
        2147483647, "ddb.toolsVersion; 2147483647 means guest-managed tools (open-vm-tools) as vSphere wants")


def check_vmdk_options(type_name: str, options: Any) -> None:
    if not 4 <= options.hwversion <= 99:
        raise ExportError(f"export {type_name}: hwversion {options.hwversion} must be between 4 and 99")
    if options.toolsversion < 0:
        raise ExportError(f"export {type_name}: toolsversion must not be negative")


class VmdkExporter(BaseExporter):
    type_name = "vmdk"
    Options: ClassVar[type] = VmdkOptions
    suffix = ".vmdk"

    def validate(self, vm: VMSpec, options: Any) -> None:
        check_vmdk_options(self.type_name, options)

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        (name,) = self.outputs(ctx.vm, options)
        write_vmdk(ctx, stage.path(name, "disk", "vmdk"), subformat=options.subformat,
                   adapter_type=options.adapter_type, hwversion=options.hwversion,
                   toolsversion=options.toolsversion)
