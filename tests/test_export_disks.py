"""Disk targets (qcow2, raw, gce, vmdk, vhd, vhdx), checked with qemu-img, their own headers and debugfs."""

from __future__ import annotations

import json
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baker.export import EXPORTERS, ExportError
from baker.export.vhd import (
    DISK_DYNAMIC,
    DISK_FIXED,
    FOOTER,
    NO_DATA_OFFSET,
    VhdFooter,
    check_vhd,
    read_footer,
    vhd_checksum,
)
from baker.export.vmdk import FLAG_COMPRESSED, FLAG_MARKERS, read_header, walk_stream
from tests.helpers.exports import (
    DISK_SIZE,
    MARKER,
    PART_OFFSET,
    all_exports,
    compare,
    context,
    info,
    master,
    read_marker,
    read_marker_raw,
    scratch,
    sh,
    vm_spec,
)


def one(type_name: str, kind: str = "disk") -> Path:
    (f,) = [f for f in all_exports().results[type_name].files if f.kind == kind]
    return f.path


def export(type_name: str, name: str, **options):
    out = scratch(name)
    result = EXPORTERS[type_name]().export(context(out), EXPORTERS[type_name].Options(**options))
    return out, result


# --- qcow2 -----------------------------------------------------------------------------------------

def check_qcow2(path: Path, compression: str = "zlib") -> dict:
    i = info(path, "qcow2")
    data = i["format-specific"]["data"]
    assert i["format"] == "qcow2" and i["virtual-size"] == DISK_SIZE
    assert "backing-filename" not in i and "full-backing-filename" not in i
    assert data["compat"] == "1.1" and data["compression-type"] == compression
    assert data["corrupt"] is False and i["dirty-flag"] is False and i["cluster-size"] == 65536
    chk = sh("qemu-img", "check", "-f", "qcow2", "--output=json", path)
    assert compare(path, "qcow2").returncode == 0
    header = path.read_bytes()[:112]
    magic, version, backing_offset = struct.unpack_from(">4sIQ", header)
    assert (magic, version, backing_offset) == (b"QFI\xfb", 3, 0)
    assert struct.unpack_from(">Q", header, 24)[0] == DISK_SIZE
    return json.loads(chk.stdout)


def test_qcow2_default_is_standalone_sparse_copy():
    path = one("qcow2")
    assert path.name == "testvm.qcow2"
    check = check_qcow2(path)
    assert check["check-errors"] == 0 and check.get("compressed-clusters", 0) == 0
    assert path.stat().st_size < DISK_SIZE // 4  # sparse: only the allocated clusters


def test_qcow2_compressed_zlib_and_zstd():
    _, res = export("qcow2", "qcow2c", compress=True, filename="c.qcow2")
    path = res.files[0].path
    assert check_qcow2(path)["compressed-clusters"] > 0
    assert path.stat().st_size < one("qcow2").stat().st_size
    _, res = export("qcow2", "qcow2z", compress=True, compression_type="zstd")
    path = res.files[0].path
    check_qcow2(path, "zstd")
    header = path.read_bytes()[:112]
    assert struct.unpack_from(">Q", header, 72)[0] & 0x8  # the incompatible bit older readers refuse
    assert header[104] == 1


def test_qcow2_rejects_compress_with_preallocation():
    out = scratch("qcow2bad")
    with pytest.raises(Exception, match="preallocation"):
        EXPORTERS["qcow2"]().export(context(out), EXPORTERS["qcow2"].Options(compress=True,
                                                                              preallocation="metadata"))
    assert list(out.iterdir()) == []


# --- raw and gce -----------------------------------------------------------------------------------

def test_raw_is_sparse_and_identical():
    path = one("raw")
    assert path.stat().st_size == DISK_SIZE
    assert path.stat().st_blocks * 512 < DISK_SIZE // 2
    assert compare(path, "raw", strict=False).returncode == 0
    assert read_marker_raw(path) == MARKER


def test_gce_tarball_layout_and_content():
    path = one("gce")
    assert path.name == "testvm.tar.gz"
    with tarfile.open(path, "r:gz") as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["disk.raw"]
        assert members[0].issparse() and members[0].size % (1 << 30) == 0
    import gzip

    with gzip.open(path) as g:
        assert g.read(512)[257:265] == b"ustar  \0"  # oldgnu magic
    d = scratch("gce")
    sh("tar", "-xSzf", path, "-C", d)
    raw = d / "disk.raw"
    assert raw.stat().st_size == 1 << 30 and raw.stat().st_blocks * 512 < 16 << 20
    r = compare(raw, "raw")
    assert r.returncode == 0, r.stdout + r.stderr  # larger, but the extra GiB tail is zeros
    sfdisk = json.loads(sh("sfdisk", "--json", raw).stdout)
    assert sfdisk["partitiontable"]["partitions"][0]["start"] * 512 == PART_OFFSET
    assert read_marker_raw(raw) == MARKER


# --- vmdk ------------------------------------------------------------------------------------------

def test_vmdk_stream_optimized_header_and_end_of_stream():
    path = one("vmdk")
    h = read_header(path)
    assert h.version == 3 and h.flags & (FLAG_COMPRESSED | FLAG_MARKERS) == FLAG_COMPRESSED | FLAG_MARKERS
    assert h.compress_algorithm == 1 and h.capacity * 512 == DISK_SIZE
    assert h.ddb("createType") == "streamOptimized"
    assert h.ddb("ddb.adapterType") == "lsilogic" and h.ddb("ddb.virtualHWVersion") == "13"
    assert h.ddb("ddb.toolsVersion") == "2147483647"
    assert f'"{path.name}"' in h.descriptor  # the real name, not a temporary one
    stream = walk_stream(path, inflate=True)
    assert stream.grains > 0 and stream.trailing_bytes == 0
    assert path.stat().st_size == (stream.eos_sector + 1) * 512
    with open(path, "rb") as f:
        f.seek(-512, 2)
        assert f.read() == b"\0" * 512  # the EOS marker is the last sector
    chk = sh("qemu-img", "check", "-f", "vmdk", path, check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert compare(path, "vmdk").returncode == 0
    assert read_marker(path, "vmdk") == MARKER


def test_vmdk_monolithic_sparse_and_options():
    _, res = export("vmdk", "vmdkm", subformat="monolithicSparse", adapter_type="buslogic", hwversion=14)
    path = res.files[0].path
    h = read_header(path)
    assert h.version == 1 and not h.stream_optimized
    assert h.ddb("ddb.adapterType") == "buslogic" and h.ddb("ddb.virtualHWVersion") == "14"
    assert sh("qemu-img", "check", "-f", "vmdk", path, check=False).returncode == 0
    assert compare(path, "vmdk").returncode == 0


def test_walk_stream_detects_truncation():
    path = one("vmdk")
    broken = scratch("vmdkcut") / "cut.vmdk"
    data = path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises((ExportError, zlib.error)):
        walk_stream(broken, inflate=True)
    # and a corrupted grain no longer inflates
    h = read_header(path)
    bad = bytearray(data)
    bad[h.overhead * 512 + 12: h.overhead * 512 + 40] = b"\xff" * 28
    broken.write_bytes(bytes(bad))
    with pytest.raises(zlib.error):
        walk_stream(broken, inflate=True)


# --- vhd -------------------------------------------------------------------------------------------

def test_vhd_dynamic_footer_and_content():
    path = one("vhd")
    f = read_footer(path)
    assert f.cookie == b"conectix" and f.checksum_ok and f.disk_type == DISK_DYNAMIC
    assert f.current_size == DISK_SIZE and f.creator_app == b"qem2"  # force_size keeps the exact size
    assert path.read_bytes()[:512] == path.read_bytes()[-512:]
    assert info(path, "vpc")["virtual-size"] == DISK_SIZE
    assert compare(path, "vpc").returncode == 0  # sizes equal (checked above); allocation differs by design
    assert read_marker(path, "vpc") == MARKER


def test_vhd_azure_is_fixed_and_mib_aligned():
    # a master whose size is not whole MiB: Azure needs it rounded up
    odd = scratch("vhdodd") / "odd.qcow2"
    size = str(DISK_SIZE + 4096)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", master().path, odd, size)
    out = scratch("vhdazure")
    res = EXPORTERS["vhd"]().export(context(out, src=odd), EXPORTERS["vhd"].Options(azure=True))
    path = res.files[0].path
    f = check_vhd(path, disk_type=DISK_FIXED, size=DISK_SIZE + (1 << 20))
    assert f.data_offset == NO_DATA_OFFSET and f.current_size % (1 << 20) == 0
    assert path.stat().st_size == f.current_size + 512 and f.creator_app == b"qem2"
    assert compare(path, "vpc").returncode == 0  # the extra MiB reads as zeros
    assert read_marker(path, "vpc") == MARKER


def test_vhd_footer_parser_rejects_damage():
    raw = bytearray(one("vhd").read_bytes()[-512:])
    assert VhdFooter.parse(bytes(raw)).checksum_ok
    raw[50] ^= 0xFF
    assert not VhdFooter.parse(bytes(raw)).checksum_ok
    with pytest.raises(ValueError):
        VhdFooter.parse(bytes(raw[:100]))


# --- vhdx ------------------------------------------------------------------------------------------

def test_vhdx_structure_content_and_sidecar():
    path = one("vhdx")
    data = path.read_bytes()[: 320 << 10]
    assert data[:8] == b"vhdxfile"
    assert data[64 << 10:(64 << 10) + 4] == b"head" and data[128 << 10:(128 << 10) + 4] == b"head"
    assert data[192 << 10:(192 << 10) + 4] == b"regi" and data[256 << 10:(256 << 10) + 4] == b"regi"
    assert sh("qemu-img", "check", "-f", "vhdx", path, check=False).returncode == 0
    assert compare(path, "vhdx", strict=False).returncode == 0
    assert read_marker(path, "vhdx") == MARKER
    meta = json.loads(one("vhdx", "metadata").read_text())
    assert meta["generation"] == 1 and meta["secure_boot"] is False
    assert (meta["cpus"], meta["memory_mb"], meta["disk"]) == (2, 1024, path.name)
    script = one("vhdx", "script")
    assert script.name == "create-vm.ps1"
    text = script.read_bytes()
    assert text.startswith(b"\xef\xbb\xbf") and b"\r\n" in text
    assert b"New-VM" in text and b"testvm.hyperv.json" in text


def test_vhdx_uefi_is_generation_2():
    out = scratch("vhdxuefi")
    res = EXPORTERS["vhdx"]().export(context(out, vm_spec(firmware="uefi")), EXPORTERS["vhdx"].Options())
    (meta,) = [f for f in res.files if f.kind == "metadata"]
    data = json.loads(meta.path.read_text())
    assert data["generation"] == 2 and data["firmware"] == "uefi" and data["secure_boot"] is False


@settings(max_examples=200, deadline=None)
@given(current=st.integers(0, 2040 << 30), disk_type=st.sampled_from([2, 3, 4]), cyl=st.integers(0, 65535),
       heads=st.integers(0, 255), uuid=st.binary(min_size=16, max_size=16), flip=st.integers(0, 511))
def test_vhd_footer_round_trip(current, disk_type, cyl, heads, uuid, flip):
    body = bytearray(FOOTER.pack(b"conectix", 2, 0x10000, NO_DATA_OFFSET, 12345, b"qem2", 0x50003, b"Wi2k",
                                 current, current, cyl, heads, 63, disk_type, 0, uuid, 0, b"\0" * 427))
    body[64:68] = vhd_checksum(bytes(body)).to_bytes(4, "big")
    f = VhdFooter.parse(bytes(body))
    assert f.checksum_ok and (f.current_size, f.disk_type, f.cylinders, f.heads, f.uuid) == (
        current, disk_type, cyl, heads, uuid)
    body[flip] ^= 0x01  # any single-bit change, even in the checksum field itself, is detected
    assert not VhdFooter.parse(bytes(body)).checksum_ok
