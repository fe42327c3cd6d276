"""VHD (qemu's `vpc`) for Azure and older Hyper-V / Virtual PC.

Azure wants a *fixed* VHD whose size is a whole number of MiB; without `force_size` qemu rounds the
size to a CHS geometry instead (not MiB-aligned, so Azure rejects it). The footer is parsed back after
writing, because `qemu-img check` cannot check VHDs and a fixed VHD even probes as raw.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    MiB,
    Staging,
    VMSpec,
    convert,
    help_field,
    master_info,
    round_up,
    sized_source,
)

FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
NO_DATA_OFFSET = (1 << 64) - 1
MAX_SIZE = 2040 << 30  # qemu's (and Azure's) VHD limit


def vhd_checksum(footer: bytes) -> int:
    """One's complement of the byte sum, with the checksum field (offset 64) taken as zero."""
    return ~sum(footer[:64] + b"\0\0\0\0" + footer[68:512]) & 0xFFFFFFFF


@dataclass(frozen=True)
class VhdFooter:
    cookie: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors: int
    disk_type: int
    checksum: int
    uuid: bytes
    saved_state: int
    checksum_ok: bool

    @classmethod
    def parse(cls, data: bytes) -> VhdFooter:
        if len(data) != FOOTER.size:
            raise ValueError(f"a VHD footer is {FOOTER.size} bytes, got {len(data)}")
        (cookie, features, version, data_offset, timestamp, app, app_version, host_os, original, current,
         cylinders, heads, sectors, disk_type, checksum, uuid, saved, _reserved) = FOOTER.unpack(data)
        return cls(cookie, features, version, data_offset, timestamp, app, app_version, host_os, original,
                   current, cylinders, heads, sectors, disk_type, checksum, uuid, saved,
                   checksum_ok=vhd_checksum(data) == checksum)


def read_footer(path: Path) -> VhdFooter:
    with open(path, "rb") as f:
        f.seek(-FOOTER.size, 2)
        return VhdFooter.parse(f.read(FOOTER.size))


def check_vhd(path: Path, *, disk_type: int, size: int | None = None) -> VhdFooter:
    """Parse the footer and raise ExportError listing every way it differs from what was asked."""
    footer = read_footer(path)
    file_size = path.stat().st_size
    problems = []
    if footer.cookie != b"conectix":
        problems.append(f"cookie {footer.cookie!r}")
    if not footer.checksum_ok:
        problems.append("bad footer checksum")
    if footer.disk_type != disk_type:
        problems.append(f"disk type {footer.disk_type}, expected {disk_type}")
    if size is not None and footer.current_size != size:
        problems.append(f"current size {footer.current_size}, expected {size}")
    if disk_type == DISK_FIXED:
        if footer.data_offset != NO_DATA_OFFSET:
            problems.append("a fixed disk with a data offset")
        if file_size != footer.current_size + FOOTER.size:
            problems.append(f"file is {file_size} bytes, expected current size + 512")
    else:
        with open(path, "rb") as f:
            head = f.read(FOOTER.size)
            f.seek(footer.data_offset)
            sparse = f.read(8)
        if head != open_tail(path):
            problems.append("footer copy at offset 0 differs")
        if sparse != b"cxsparse":
            problems.append("no dynamic disk header")
    if problems:
        raise ExportError(f"{path.name}: VHD footer check failed: {'; '.join(problems)}")
    return footer


def open_tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-FOOTER.size, 2)
        return f.read(FOOTER.size)


@dataclass
class VhdOptions:
    filename: str | None = help_field(None, "output file name (default: <name>.vhd)")
    subformat: Literal["fixed", "dynamic"] = help_field(
        "dynamic", "fixed: the full size on disk (Azure); dynamic: grows as written")
    azure: bool = help_field(
        False, "Azure upload rules: fixed, force_size, size rounded up to whole MiB, at most 2040 GiB")
    force_size: bool = help_field(
        True, "keep the exact virtual size instead of rounding it up to a CHS geometry (creator 'qem2')")


class VhdExporter(BaseExporter):
    type_name = "vhd"
    Options: ClassVar[type] = VhdOptions
    suffix = ".vhd"

    def validate(self, vm: VMSpec, options: Any) -> None:
        if vm.disk_size > MAX_SIZE:
            raise ExportError(f"export vhd: the disk is larger than VHD's limit of {MAX_SIZE >> 30} GiB",
                              hint="use vhdx for Hyper-V")

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        (name,) = self.outputs(ctx.vm, options)
        size = master_info(ctx)[1]
        subformat, force = options.subformat, options.force_size
        if options.azure:
            if subformat != "fixed" or not force:
                ctx.log.info("export vhd: azure: writing a fixed VHD with force_size")
            subformat, force, size = "fixed", True, round_up(size, MiB)
        if size > MAX_SIZE:
            raise ExportError(f"export vhd: {size} bytes is larger than VHD's limit of 2040 GiB")
        source, fmt = sized_source(ctx, scratch, size)
        dest = stage.path(name, "disk", "vhd")
        opts: dict[str, str | int] = {"subformat": subformat}
        if force:
            opts["force_size"] = "on"
        convert(ctx, dest, "vpc", opts, source=source, source_fmt=fmt)
        check_vhd(dest, disk_type=DISK_FIXED if subformat == "fixed" else DISK_DYNAMIC,
                  size=size if force else None)
