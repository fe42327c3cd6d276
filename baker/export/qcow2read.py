"""Read a standalone qcow2's guest clusters straight from its L1/L2 tables (qemu's
docs/interop/qcow2.txt), so that another format can reuse its compressed clusters instead of
deflating the disk a second time (vmdkstream.py). Stdlib only; one cluster in memory at a time.

Only what `qemu-img convert` writes is read: no backing file (its unallocated clusters would read as
the backing file's data, not zeros), no encryption, no external data file, no extended L2 entries.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from baker.export.base import ExportError

MAGIC = b"QFI\xfb"
_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # the 72 bytes every version has
_V3 = struct.Struct(">QQQII")  # incompatible/compatible/autoclear features, refcount_order, header_length
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00  # bits 9-55: L2 table / host cluster offset
FLAG_COMPRESSED = 1 << 62
FLAG_ZERO = 1  # standard cluster descriptor bit 0 (version 3): reads as zeros
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4)
COMPRESSION_ZLIB, COMPRESSION_ZSTD = 0, 1
SECTOR = 512


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    backing_file: str | None
    cluster_bits: int
    size: int  # virtual bytes
    crypt_method: int
    l1_size: int
    l1_offset: int
    incompatible: int
    compression_type: int

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def clusters(self) -> int:
        return -(-self.size // self.cluster_size)

    def unreadable(self) -> str | None:
        """Why this reader cannot read the image's clusters itself, or None."""
        if self.crypt_method:
            return "it is encrypted"
        known = INCOMPAT_COMPRESSION  # a compression type is handled: clusters are returned as stored
        if self.incompatible & ~known:
            return f"it has incompatible feature bits {self.incompatible:#x} (dirty, corrupt, data file, " \
                   "or extended L2)"
        if not 9 <= self.cluster_bits <= 21:
            return f"cluster_bits {self.cluster_bits} is out of range"
        return None


def read_header(path: Path) -> Qcow2Header:
    with open(path, "rb") as f:
        raw = f.read(4096)
        if len(raw) < _V2.size or raw[:4] != MAGIC:
            raise ExportError(f"{path.name}: not a qcow2 image")
        (_m, version, backing_off, backing_len, cluster_bits, size, crypt, l1_size, l1_off, *_rest) = (
            _V2.unpack_from(raw))
        incompatible, compression = 0, COMPRESSION_ZLIB
        if version >= 3:
            incompatible, _compat, _autoclear, _order, header_len = _V3.unpack_from(raw, _V2.size)
            if incompatible & INCOMPAT_COMPRESSION and header_len > 104:
                compression = raw[104]
        elif version != 2:
            raise ExportError(f"{path.name}: qcow2 version {version} is not supported")
        backing = None
        if backing_off:
            f.seek(backing_off)
            backing = f.read(backing_len).decode("utf-8", "replace")
    return Qcow2Header(version, backing, cluster_bits, size, crypt, l1_size, l1_off, incompatible,
                       compression)


@dataclass(frozen=True)
class Cluster:
    index: int  # guest cluster number
    host_offset: int
    compressed: bool
    length: int  # bytes at host_offset: the cluster, or (compressed) the sectors its stream may use


class Qcow2Reader:
    """The allocated, not-all-zero clusters of a standalone qcow2, in guest order (use as a context)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header = h = read_header(path)
        if h.backing_file is not None:
            raise ExportError(f"{path.name}: has a backing file ({h.backing_file}); its unallocated "
                              "clusters are the backing file's data",
                              hint="flatten it first (qemu-img convert)")
        if why := h.unreadable():
            raise ExportError(f"{path.name}: cannot read its clusters: {why}")
        if h.l1_size * (h.cluster_size // 8) < h.clusters:
            raise ExportError(f"{path.name}: L1 table of {h.l1_size} entries is too small for the disk size")
        # compressed cluster descriptor: offset in bits 0..x-1, extra sectors in x..61
        self._cshift = 62 - (h.cluster_bits - 8)
        self._cmask = (1 << (h.cluster_bits - 8)) - 1
        self._fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Qcow2Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) < length:
            raise ExportError(f"{self.path.name}: truncated: {length} bytes at offset {offset} are past "
                              "its end")
        return data

    def clusters(self) -> Iterator[Cluster]:
        """Clusters that hold data; unallocated and zero-flagged ones are skipped (they read as zeros)."""
        h = self.header
        per_l2 = h.cluster_size // 8
        l1 = struct.unpack(f">{h.l1_size}Q", self._pread(8 * h.l1_size, h.l1_offset))
        for i, l1_entry in enumerate(l1):
            first = i * per_l2
            if first >= h.clusters:
                break
            l2_offset = l1_entry & OFFSET_MASK
            if not l2_offset:
                continue
            l2 = struct.unpack(f">{per_l2}Q", self._pread(h.cluster_size, l2_offset))
            for j, entry in enumerate(l2[: h.clusters - first]):
                if entry & FLAG_COMPRESSED:
                    offset = entry & ((1 << self._cshift) - 1)
                    sectors = ((entry >> self._cshift) & self._cmask) + 1
                    yield Cluster(first + j, offset, True, sectors * SECTOR - (offset & (SECTOR - 1)))
                    continue
                if h.version >= 3 and entry & FLAG_ZERO:
                    continue
                offset = entry & OFFSET_MASK
                if offset:
                    yield Cluster(first + j, offset, False, h.cluster_size)

    def read(self, c: Cluster) -> tuple[bytes, bytes | None]:
        """The cluster's data, and for a compressed cluster the exact raw deflate stream it is stored as
        (inflated here to check it, and to hand back the data)."""
        stored = os.pread(self._fd, c.length, c.host_offset)  # a stream near the end may stop short of it
        if not c.compressed:
            if len(stored) < c.length:
                raise ExportError(f"{self.path.name}: cluster {c.index} is past the end of the file")
            return stored, None
        if self.header.compression_type != COMPRESSION_ZLIB:
            raise ExportError(f"{self.path.name}: cluster {c.index} is not zlib-compressed")
        d = zlib.decompressobj(-15)
        try:
            data = d.decompress(stored, self.header.cluster_size + 1)
        except zlib.error as e:
            raise ExportError(f"{self.path.name}: compressed cluster {c.index} does not inflate: "
                              f"{e}") from None
        if not d.eof or len(data) != self.header.cluster_size:
            raise ExportError(f"{self.path.name}: compressed cluster {c.index} inflates to {len(data)} bytes "
                              f"{'' if d.eof else 'without an end '}instead of one cluster")
        return data, stored[: len(stored) - len(d.unused_data)]
