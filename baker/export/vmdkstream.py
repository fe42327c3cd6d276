"""Write a streamOptimized VMDK (VMware Virtual Disk Format 5.0/1.1, "stream-optimized compressed
sparse extent") from grains given in disk order, and make one from a zlib-compressed qcow2.

Why: qemu-img deflates the whole disk again, on one core, for a VMDK; the export run already has the
disk deflated in a 64 KiB-cluster qcow2 (made on every core), and a qcow2 compressed cluster is a raw
deflate stream of exactly what a 64 KiB grain holds. A grain is a zlib stream, so each compressed
cluster becomes a grain by adding the 2-byte zlib header and the adler32 of its data: inflating (fast,
C zlib) replaces deflating (slow). Clusters qemu stored uncompressed are deflated here.

Layout, as VMware's own stream writers do it: header (version 3, flags newline-test + compressed +
markers, gdOffset "at end"), the embedded descriptor at sector 1, grains from sector 128 on (marker:
lba + size, then the zlib stream, padded to a sector), each grain table after the grains it covers
(GT marker), the grain directory (GD marker), the footer (marker + a copy of the header with the real
gdOffset), then the end-of-stream marker as the file's last sector. Readers find the footer at
file size - 1536 bytes, so nothing may follow EOS.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from baker.export.base import ExportError
from baker.export.qcow2read import COMPRESSION_ZLIB, Qcow2Reader

SECTOR = 512
HEADER = struct.Struct("<4sIIQQQQIQQQ?ccccH")
FLAG_NEWLINE_TEST = 1 << 0
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
COMPRESSION_DEFLATE = 1
GD_AT_END = 0xFFFF_FFFF_FFFF_FFFF
GRAIN_SECTORS = 128  # 64 KiB, qemu's and VMware's default
GTES_PER_GT = 512
DESCRIPTOR_OFFSET, DESCRIPTOR_SECTORS = 1, 20  # where qemu puts it (rewrite_descriptor edits it there)
OVERHEAD = 128  # sectors before the first grain
ZLIB_HEADER = b"\x78\x9c"  # deflate, 32 KiB window (qemu's clusters use 4 KiB: any larger window reads them)
_GRAIN_MARKER = struct.Struct("<QI")
_META_MARKER = struct.Struct("<QII")


def ddb_values(capacity: int, *, adapter_type: str, hwversion: int,
               toolsversion: int) -> list[tuple[str, int | str]]:
    """The disk database entries qemu-img writes: hardware version, CHS geometry (qemu's rule: 16 heads
    for IDE, else 255, 63 sectors), adapter and tools version. One place for descriptor() and
    vmdk.rewrite_descriptor."""
    heads = 16 if adapter_type == "ide" else 255
    return [("ddb.virtualHWVersion", hwversion), ("ddb.geometry.cylinders", capacity // (heads * 63)),
            ("ddb.geometry.heads", heads), ("ddb.geometry.sectors", 63), ("ddb.adapterType", adapter_type),
            ("ddb.toolsVersion", toolsversion)]


def descriptor(capacity: int, extent_name: str, *, adapter_type: str = "lsilogic", hwversion: int = 4,
               toolsversion: int = 2147483647) -> str:
    """The embedded descriptor as qemu-img writes it for a streamOptimized disk (vmdk.rewrite_descriptor
    later sets the shipped name, adapter, geometry and versions)."""
    cid = int.from_bytes(os.urandom(4), "little")
    ddb = "".join(f'{k} = "{v}"\n' for k, v in ddb_values(capacity, adapter_type=adapter_type,
                                                             hwversion=hwversion, toolsversion=toolsversion))
    return (f"# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n"
            f'createType="streamOptimized"\n\n# Extent description\nRW {capacity} SPARSE "{extent_name}"\n\n'
            f"# The Disk Data Base\n#DDB\n\n{ddb}")


def _pad(n: int) -> int:
    return -n % SECTOR


class StreamWriter:
    """Appends grains (in increasing grain order) and their tables to `f`; `finish` ends the stream."""

    def __init__(self, f: BinaryIO, capacity: int, descriptor_text: str) -> None:
        self.f = f
        self.capacity = capacity  # sectors
        self.grains = -(-capacity // GRAIN_SECTORS)
        self.gd = [0] * -(-self.grains // GTES_PER_GT)
        self.gt: list[int] = [0] * GTES_PER_GT
        self.gt_index = 0  # the grain table `gt` belongs to
        self.last_grain = -1
        self.sector = OVERHEAD
        self.count = 0
        desc = descriptor_text.encode()
        if len(desc) > DESCRIPTOR_SECTORS * SECTOR:
            raise ExportError("VMDK descriptor is larger than its 20 sectors")
        f.write(self._header(GD_AT_END))
        f.write(desc + bytes(DESCRIPTOR_SECTORS * SECTOR - len(desc)))
        f.write(bytes((OVERHEAD - DESCRIPTOR_OFFSET - DESCRIPTOR_SECTORS) * SECTOR))

    def _header(self, gd_offset: int) -> bytes:
        h = HEADER.pack(b"KDMV", 3, FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS, self.capacity,
                        GRAIN_SECTORS, DESCRIPTOR_OFFSET, DESCRIPTOR_SECTORS, GTES_PER_GT, 0, gd_offset,
                        OVERHEAD, False, b"\n", b" ", b"\r", b"\n", COMPRESSION_DEFLATE)
        return h + bytes(SECTOR - len(h))

    def _meta(self, sectors: int, kind: int, body: bytes) -> int:
        """Write a metadata marker and its body; returns the body's sector."""
        m = _META_MARKER.pack(sectors, 0, kind)
        self.f.write(m + bytes(SECTOR - len(m)) + body + bytes(_pad(len(body))))
        at = self.sector + 1
        self.sector = at + sectors
        return at

    def _flush_gt(self) -> None:
        if any(self.gt):
            self.gd[self.gt_index] = self._meta(GTES_PER_GT * 4 // SECTOR, MARKER_GT,
                                                struct.pack(f"<{GTES_PER_GT}I", *self.gt))
            self.gt = [0] * GTES_PER_GT

    def add_grain(self, grain: int, parts: tuple[bytes, ...]) -> None:
        """Grain number `grain` (its first sector is grain * 128) as a zlib stream split into `parts`."""
        if not self.last_grain < grain < self.grains:
            raise ExportError(f"VMDK stream: grain {grain} out of order or past the disk's end")
        if grain // GTES_PER_GT != self.gt_index:
            self._flush_gt()
            self.gt_index = grain // GTES_PER_GT
        size = sum(len(p) for p in parts)
        self.gt[grain % GTES_PER_GT] = self.sector
        self.f.write(_GRAIN_MARKER.pack(grain * GRAIN_SECTORS, size))
        for p in parts:
            self.f.write(p)
        total = _GRAIN_MARKER.size + size
        self.f.write(bytes(_pad(total)))
        self.sector += -(-total // SECTOR)
        self.last_grain = grain
        self.count += 1

    def finish(self) -> int:
        """Grain table, grain directory, footer and end-of-stream marker; returns the EOS sector."""
        self._flush_gt()
        gd = struct.pack(f"<{len(self.gd)}I", *self.gd)
        gd_at = self._meta(-(-len(gd) // SECTOR), MARKER_GD, gd)
        self._meta(1, MARKER_FOOTER, self._header(gd_at))
        self.f.write(bytes(SECTOR))  # EOS: a metadata marker with every field 0
        return self.sector


@dataclass(frozen=True)
class Transcoded:
    grains: int
    copied: int  # grains that are qcow2 deflate streams reused as they are
    deflated: int  # grains deflated here (clusters qemu stored uncompressed)
    eos_sector: int


def transcode_blocker(path: Path) -> str | None:
    """Why `path`'s clusters cannot become grains as they are (then convert with qemu-img), or None."""
    try:
        r = Qcow2Reader(path)
    except ExportError as e:
        return e.message
    with r:
        h = r.header
        if h.cluster_size != GRAIN_SECTORS * SECTOR:
            return f"its clusters are {h.cluster_size} bytes, not one {GRAIN_SECTORS * SECTOR}-byte grain"
        if h.compression_type != COMPRESSION_ZLIB:
            return f"its compression type is {h.compression_type}, not zlib"
        if h.size % SECTOR:
            return f"its size {h.size} is not a whole number of sectors"
    return None


def qcow2_to_stream(src: Path, dest: Path, *, extent_name: str | None = None, level: int = 6) -> Transcoded:
    """Write `dest`, a streamOptimized VMDK with `src`'s content, reusing `src`'s deflated clusters.

    `src` must be a standalone zlib qcow2 with 64 KiB clusters (see transcode_blocker); all-zero clusters
    become no grain. `dest` is written in place: callers give a temporary path.
    """
    if why := transcode_blocker(src):
        raise ExportError(f"{src.name}: cannot transcode to a streamOptimized VMDK: {why}")
    copied = deflated = 0
    with Qcow2Reader(src) as r, open(dest, "wb", buffering=1 << 20) as f:
        zero = bytes(r.header.cluster_size)
        w = StreamWriter(f, r.header.size // SECTOR, descriptor(r.header.size // SECTOR,
                                                                 extent_name or dest.name))
        for c in r.clusters():
            data, stream = r.read(c)
            if data == zero:
                continue
            if stream is not None:
                w.add_grain(c.index, (ZLIB_HEADER, stream, struct.pack(">I", zlib.adler32(data))))
                copied += 1
            else:
                w.add_grain(c.index, (zlib.compress(data, level),))
                deflated += 1
        eos = w.finish()
    return Transcoded(w.count, copied, deflated, eos)
