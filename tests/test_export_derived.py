"""Exports share their intermediate disks (baker/export/derived.py): made once, never shared by inode."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from baker.errors import BakerError
from baker.export import EXPORTERS, run_exports
from baker.export.derived import DerivedCache
from baker.export.vmdk import read_header, rewrite_descriptor, walk_stream
from tests.helpers.exports import compare, context, scratch


def _opts(type_name: str, **kw):
    return (type_name, EXPORTERS[type_name].Options(**kw))


@functools.cache
def shared_run() -> Path:
    out = scratch("derived")
    run_exports(context(out), [
        _opts("qcow2", compress=True), _opts("vmdk"), _opts("ova"), _opts("vagrant", provider="libvirt"),
        _opts("vagrant", provider="virtualbox"), _opts("libvirt", compress=True), _opts("raw")], jobs=2)
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:*") as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def _grains(data: bytes) -> bytes:
    """A VMDK's bytes without its embedded descriptor (sectors 1..20 as qemu lays them out)."""
    return data[:512] + data[21 * 512:]


def test_box_and_libvirt_carry_the_compressed_qcow2_but_no_output_shares_an_inode():
    out = shared_run()
    qcow2 = (out / "testvm.qcow2").read_bytes()
    assert _sha(_member(out / "testvm-1.2.0-libvirt.box", "box.img")) == _sha(qcow2)
    assert (out / "testvm-libvirt.qcow2").read_bytes() == qcow2
    inodes = [p.stat().st_ino for p in out.iterdir()]
    assert len(inodes) == len(set(inodes))
    assert all(p.stat().st_nlink == 1 for p in out.iterdir())
    assert compare(out / "testvm.qcow2", "qcow2").returncode == 0
    assert compare(out / "testvm.raw", "raw").returncode == 0


def test_ova_and_virtualbox_vmdk_are_the_vmdk_with_their_own_descriptor():
    out = shared_run()
    vmdk = (out / "testvm.vmdk").read_bytes()
    ova_disk = _member(out / "testvm.ova", "testvm-disk1.vmdk")
    box_disk = _member(out / "testvm-1.2.0-virtualbox.box", "box-disk001.vmdk")
    assert _grains(ova_disk) == _grains(vmdk) == _grains(box_disk)
    d = scratch("derived-vmdk")
    for name, data, adapter in [("testvm-disk1.vmdk", ova_disk, "lsilogic"),
                                ("box-disk001.vmdk", box_disk, "ide")]:
        (d / name).write_bytes(data)
        header = read_header(d / name)
        assert f'SPARSE "{name}"' in header.descriptor
        assert header.ddb("ddb.adapterType") == adapter
        assert walk_stream(d / name, inflate=True).trailing_bytes == 0
        assert compare(d / name, "vmdk").returncode == 0


@pytest.mark.parametrize("subformat", ["streamOptimized", "monolithicSparse"])
def test_rewritten_descriptor_is_what_qemu_img_writes(tmp_path: Path, subformat: str):
    def create(path: Path, adapter: str, hw: int, tools: int) -> None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o",
                        f"subformat={subformat},adapter_type={adapter},hwversion={hw},toolsversion={tools}",
                        path, "3000M"], check=True)

    create(tmp_path / "base.vmdk", "lsilogic", 13, 2147483647)
    for adapter, hw, tools in [("ide", 4, 2147483647), ("buslogic", 10, 12), ("legacyESX", 13, 5)]:
        want, got = tmp_path / "want" / "disk.vmdk", tmp_path / "got" / "disk.vmdk"
        want.parent.mkdir(exist_ok=True)
        got.parent.mkdir(exist_ok=True)
        create(want, adapter, hw, tools)
        got.write_bytes((tmp_path / "base.vmdk").read_bytes())
        rewrite_descriptor(got, adapter_type=adapter, hwversion=hw, toolsversion=tools)

        def strip(p: Path) -> list[str]:
            return [x for x in read_header(p).descriptor.splitlines() if not x.startswith("CID=")]

        assert strip(got) == strip(want)
        assert subprocess.run(["qemu-img", "check", got], capture_output=True).returncode == 0


def test_cache_makes_each_entry_once_and_shares_a_failure(tmp_path: Path):
    cache = DerivedCache(tmp_path, slots=threading.Semaphore(1))
    calls: list[int] = []

    def make(path: Path) -> None:
        calls.append(1)
        path.write_text("x")

    results: list[Path] = []

    def ask() -> None:
        with cache.slot():  # one slot for four askers: waiting must give it away, or this deadlocks
            results.append(cache.get(("k",), make, ".txt"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 4

    def broken(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.get(("bad",), broken, ".txt")
    with pytest.raises(BakerError, match="disk full"):
        cache.get(("bad",), make, ".txt")
    assert len(calls) == 1
    assert sorted(p.name for p in cache.root.iterdir()) == [results[0].name]
    cache.close()
    assert not cache.root.exists()


def test_run_exports_leaves_no_intermediates():
    shared_run()
    work = context(scratch("unused")).work_dir
    assert not list(work.glob("derived-*"))


def test_what_tar_reads_is_a_private_copy_never_a_link_to_a_shared_disk(monkeypatch: pytest.MonkeyPatch):
    """Publishing hard-links a shared disk, which changes its ctime; GNU tar fails a member whose ctime
    changed while it read it ("file changed as we read it"), so a tar must never read a linked entry."""
    import baker.export.raw as raw_mod
    import baker.export.vagrant as vagrant_mod

    seen: list[tuple[str, int]] = []

    def checking(real):
        def run(argv, *a, **kw):
            if argv[0] == "tar":
                folder = Path(argv[argv.index("-C") + 1])
                seen.extend((p.name, p.stat().st_nlink) for p in folder.rglob("*") if p.is_file())
            return real(argv, *a, **kw)
        return run

    monkeypatch.setattr(vagrant_mod, "run", checking(vagrant_mod.run))
    monkeypatch.setattr(raw_mod, "run", checking(raw_mod.run))
    out = scratch("derived-tar")
    run_exports(context(out), [_opts("qcow2", compress=True), _opts("vagrant", provider="libvirt"),
                               _opts("raw"), _opts("gce")], jobs=2)
    names = {n for n, _ in seen}
    assert {"box.img", "disk.raw"} <= names
    assert [(n, links) for n, links in seen if links != 1] == []
