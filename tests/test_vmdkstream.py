"""streamOptimized VMDK written from a compressed qcow2 (baker/export/qcow2read.py, vmdkstream.py).

Small qcow2 images made by qemu-img/qemu-io from random, repeated and zero data; every transcoded VMDK
is checked with qemu-img (compare, check), with walk_stream's own marker walk (every grain inflated),
and for the layout streaming readers rely on (version 3, footer 1536 bytes before the end, EOS last).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from baker.export import EXPORTERS, ExportError, run_exports
from baker.export.qcow2read import Qcow2Reader
from baker.export.vmdk import FLAG_COMPRESSED, FLAG_MARKERS, read_header, walk_stream
from baker.export.vmdkstream import (
    GD_AT_END,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    qcow2_to_stream,
    transcode_blocker,
)
from tests.helpers.exports import compare, context, scratch, sh

CLUSTER = 64 << 10
SIZE = 5 * (1 << 20) + 3 * 512  # not a whole number of clusters


@functools.cache
def mixed_raw() -> Path:
    """Random (qemu stores it uncompressed), repeated, zero and a tail cluster cut by the disk's end."""
    raw = scratch("vmdkstream") / "mixed.raw"
    rnd = os.urandom(CLUSTER)
    with open(raw, "wb") as f:
        f.write(rnd)  # cluster 0: incompressible
        f.write(b"abc" * 40000)  # clusters 1-2: repeated
        f.seek(3 << 20)
        f.write(os.urandom(1000) * 100)  # compressible, 2 clusters, not cluster-aligned at its end
        f.seek(4 << 20)
        f.write(bytes(CLUSTER))  # explicit zeros: no grain
        f.seek(SIZE - 1000)
        f.write(b"z" * 1000)  # the last, partial cluster
        f.truncate(SIZE)
    return raw


def qcow2(raw: Path, name: str, *, cluster_size: int = CLUSTER, compression: str = "zlib",
          compat: str = "1.1") -> Path:
    """What the export run's qcow2 entry is: compressed on several coroutines (clusters out of order)."""
    out = raw.parent / name
    extra = f",compression_type={compression}" if compat == "1.1" else ""
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-W", "-o",
       f"compat={compat},cluster_size={cluster_size}{extra}", raw, out)
    return out


def check_vmdk(vmdk: Path, source: Path, source_fmt: str, size: int) -> None:
    """Everything a consumer of the VMDK relies on."""
    h = read_header(vmdk)
    assert h.version == 3 and h.flags & (FLAG_COMPRESSED | FLAG_MARKERS) == FLAG_COMPRESSED | FLAG_MARKERS
    assert h.compress_algorithm == 1 and h.grain_size == 128 and h.gd_offset == GD_AT_END
    assert h.ddb("createType") == "streamOptimized" and h.ddb("ddb.toolsVersion") == "2147483647"
    assert f'SPARSE "{vmdk.name}"' in h.descriptor
    info = walk_stream(vmdk, inflate=True)
    assert info.trailing_bytes == 0 and vmdk.stat().st_size == (info.eos_sector + 1) * 512
    data = vmdk.read_bytes()
    assert data[-512:] == bytes(512)  # EOS is the last sector
    marker, footer = data[-1536:-1024], data[-1024:-512]
    assert struct.unpack_from("<QII", marker) == (1, 0, MARKER_FOOTER)
    gd = struct.unpack_from("<Q", footer, 56)[0]
    assert footer[:56] == data[:56] and footer[64:512] == data[64:512]  # the header but for gdOffset
    assert struct.unpack_from("<QII", data, (gd - 1) * 512)[1:] == (0, MARKER_GD)
    for gt in struct.unpack_from(f"<{-(-h.capacity // (128 * 512))}I", data, gd * 512):
        assert gt == 0 or struct.unpack_from("<QII", data, (gt - 1) * 512)[1:] == (0, MARKER_GT)
    chk = sh("qemu-img", "check", "-f", "vmdk", vmdk, check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    cmp = sh("qemu-img", "compare", "-f", source_fmt, "-F", "vmdk", source, vmdk, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "mismatch" not in cmp.stdout  # same size, not just a zero tail
    assert h.capacity * 512 == size


def test_mixed_disk_is_identical_and_reuses_the_deflate_streams():
    raw = mixed_raw()
    src = qcow2(raw, "mixed.qcow2")
    vmdk = raw.parent / "mixed.vmdk"
    done = qcow2_to_stream(src, vmdk)
    check_vmdk(vmdk, raw, "raw", SIZE)
    # cluster 0 (random) was stored uncompressed: deflated here; 1, 2, 3, 4 and the tail were reused;
    # the zero cluster at 4 MiB and the unwritten ones make no grain
    assert done.deflated == 1 and done.copied == 5 and done.grains == 6
    assert walk_stream(vmdk).grains == 6
    # the grains are the qcow2's own deflate streams, byte for byte, not a second compression
    with Qcow2Reader(src) as r:
        streams = {c.index: r.read(c)[1] for c in r.clusters() if c.compressed}
    data = vmdk.read_bytes()
    sector = read_header(vmdk).overhead
    seen = 0
    while True:
        lba, size = struct.unpack_from("<QI", data, sector * 512)
        if not size:
            break
        grain = data[sector * 512 + 12: sector * 512 + 12 + size]
        if lba // 128 in streams:
            assert grain[:2] == b"\x78\x9c" and grain[2:-4] == streams[lba // 128]
            assert grain[-4:] == struct.pack(">I", zlib.adler32(zlib.decompress(grain)))
            seen += 1
        sector += -(-(12 + size) // 512)
    assert seen == 5


_LIBVMDK_SHA256 = """
import hashlib, sys, pyvmdk
h = pyvmdk.handle()
h.open(sys.argv[1])
h.open_extent_data_files()
size, d = h.get_media_size(), hashlib.sha256()
for off in range(0, size, 1 << 20):
    d.update(h.read_buffer_at_offset(min(1 << 20, size - off), off))
print(size, d.hexdigest())
"""


def _has_libvmdk() -> bool:
    python = shutil.which("python3", path="/usr/bin")  # Debian's binding is for the system Python
    return python is not None and subprocess.run([python, "-c", "import pyvmdk"],
                                                 capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_libvmdk(), reason="python3-libvmdk not installed (scripts/deps-debian.txt)")
def test_libvmdk_reads_the_same_disk():
    """A reader that is not qemu's (libyal's libvmdk) follows the footer, grain directory and tables too."""
    raw = mixed_raw()
    vmdk = raw.parent / "libvmdk.vmdk"
    qcow2_to_stream(qcow2(raw, "libvmdk.qcow2"), vmdk)
    got = sh("/usr/bin/python3", "-c", _LIBVMDK_SHA256, vmdk).stdout.split()
    assert got == [str(SIZE), hashlib.sha256(raw.read_bytes()).hexdigest()]


def test_a_version_2_qcow2_reads_the_same(tmp_path: Path):
    raw = mixed_raw()
    vmdk = tmp_path / "v2.vmdk"
    done = qcow2_to_stream(qcow2(raw, "v2.qcow2", compat="0.10"), vmdk)
    check_vmdk(vmdk, raw, "raw", SIZE)
    assert (done.grains, done.copied) == (6, 5)


def test_zero_flagged_compressed_zero_and_plain_clusters(tmp_path: Path):
    """qemu-io leaves standard (uncompressed) clusters, zero-flagged ones (with and without a host
    cluster) and a compressed all-zero cluster; only data makes grains."""
    img = tmp_path / "z.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536", img, "40M")
    for cmd in ("write -P 0x11 0 192k", "write -z 64k 64k", "write -z 1M 64k", "write -c -P 0 2M 64k",
                "write -c -P 0x22 3M 64k", "write -P 0x33 33M 100k"):
        sh("qemu-io", "-f", "qcow2", "-c", cmd, img)
    vmdk = tmp_path / "z.vmdk"
    done = qcow2_to_stream(img, vmdk)
    check_vmdk(vmdk, img, "qcow2", 40 << 20)
    # 0 and 128k (plain), 3M (compressed), 33M..33M+100k (two plain): 64k, 1M and 2M read as zeros
    assert (done.grains, done.copied, done.deflated) == (5, 1, 4)


def test_a_disk_with_nothing_written_is_header_tables_and_eos(tmp_path: Path):
    img = tmp_path / "empty.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", img, "100M")
    vmdk = tmp_path / "empty.vmdk"
    assert qcow2_to_stream(img, vmdk).grains == 0
    check_vmdk(vmdk, img, "qcow2", 100 << 20)


def test_a_backing_file_is_refused(tmp_path: Path):
    base = qcow2(mixed_raw(), "base.qcow2")
    top = tmp_path / "top.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    with pytest.raises(ExportError, match="backing file"):
        qcow2_to_stream(top, tmp_path / "top.vmdk")
    with pytest.raises(ExportError, match="backing file"):
        Qcow2Reader(top)
    assert "backing file" in (transcode_blocker(top) or "")  # so an export would convert with qemu-img
    assert not (tmp_path / "top.vmdk").exists()


@pytest.mark.parametrize(("kw", "why"), [({"compression": "zstd"}, "not zlib"),
                                         ({"cluster_size": 128 << 10}, "131072 bytes"),
                                         ({"cluster_size": 4096}, "4096 bytes")])
def test_what_cannot_be_transcoded_says_why(kw: dict, why: str):
    src = qcow2(mixed_raw(), f"x-{why.split()[0]}.qcow2", **kw)
    reason = transcode_blocker(src)
    assert reason is not None and why in reason
    with pytest.raises(ExportError, match=why):
        qcow2_to_stream(src, src.with_suffix(".vmdk"))


def test_a_corrupt_compressed_cluster_fails_rather_than_ship(tmp_path: Path):
    src = qcow2(mixed_raw(), "corrupt.qcow2")
    with Qcow2Reader(src) as r:
        victim = next(c for c in r.clusters() if c.compressed)
    bad = tmp_path / "bad.qcow2"
    data = bytearray(src.read_bytes())
    data[victim.host_offset: victim.host_offset + 64] = b"\xff" * 64
    bad.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"cluster {victim.index}"):
        qcow2_to_stream(bad, tmp_path / "bad.vmdk")


def test_not_a_qcow2_is_refused(tmp_path: Path):
    with pytest.raises(ExportError, match="not a qcow2"):
        qcow2_to_stream(mixed_raw(), tmp_path / "raw.vmdk")


# --- in an export run ------------------------------------------------------------------------------

def _commands(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for r in caplog.records if r.name == "baker.proc" and (m := r.getMessage()).startswith("$")]


def test_export_run_converts_once_and_transcodes_the_vmdk(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="baker.proc")
    out = scratch("vmdkstream-run")
    run_exports(context(out), [("qcow2", EXPORTERS["qcow2"].Options(compress=True)),
                               ("vmdk", EXPORTERS["vmdk"].Options())], jobs=2)
    converts = [c for c in _commands(caplog) if c.startswith("$ qemu-img convert")]
    assert not [c for c in converts if "-O vmdk" in c], converts  # the disk is deflated once, for the qcow2
    assert len([c for c in converts if "-O qcow2 -c" in c]) == 1, converts
    assert compare(out / "testvm.vmdk", "vmdk").returncode == 0
    assert walk_stream(out / "testvm.vmdk", inflate=True).trailing_bytes == 0


def test_export_falls_back_to_qemu_img_when_the_qcow2_cannot_be_transcoded(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    import baker.export.vmdk as vmdk_mod

    monkeypatch.setattr(vmdk_mod, "transcode_blocker", lambda _p: "a test says so")
    caplog.set_level(logging.DEBUG)
    out = scratch("vmdkstream-fallback")
    run_exports(context(out), [("vmdk", EXPORTERS["vmdk"].Options())], jobs=1)
    assert any("-O vmdk" in c for c in _commands(caplog))
    assert any("a test says so" in r.getMessage() for r in caplog.records)
    h = read_header(out / "testvm.vmdk")
    assert h.version == 3 and h.gd_offset != GD_AT_END  # qemu's layout: tables up front
    assert walk_stream(out / "testvm.vmdk").trailing_bytes == 0
    assert compare(out / "testvm.vmdk", "vmdk").returncode == 0
