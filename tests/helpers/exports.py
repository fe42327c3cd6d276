"""Shared setup for the export tests: one synthetic master disk and one run of every export.

Built once per test process (cached here, not in a conftest, so the export tests stay self-contained)
and removed at exit. The master is a qcow2 overlay on a qcow2 base holding an MBR-partitioned 64 MiB
disk with an ext4 filesystem at 1 MiB that contains a known marker file and 2 MiB of random data
(so every export is larger than the 1 MiB tmpfs used by the disk-full test). The overlay carries a
pattern written with qemu-io, so an export that ignored the backing chain would fail `compare`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from baker.export import EXPORTERS, ExportContext, ExportResult, VMSpec, run_exports
from tests.helpers.paths import ROOT

MARKER = "baked by baker: marker 7f3c\n"
PART_OFFSET = 1 << 20
DISK_SIZE = 64 << 20
PATTERN_OFFSET = 62 << 20  # inside the partition's free space; written only in the overlay
XSD_DIR = ROOT.parent / "shared" / "reference" / "ovf-xsd"
log = logging.getLogger("baker.test.export")


def sh(*argv: str | os.PathLike[str], check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    """Run a checking tool; the tests call tools directly so they do not trust baker.proc."""
    return subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True, check=check, **kw)


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="baker-export-test-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@dataclass(frozen=True)
class Master:
    path: Path  # qcow2 overlay (what exporters get)
    base: Path  # its backing file
    sha256: str  # of the overlay file, to prove exporters never modify it


@functools.cache
def master() -> Master:
    d = _root() / "master"
    (d / "tree" / "etc").mkdir(parents=True)
    (d / "tree" / "var").mkdir()
    (d / "tree" / "etc" / "baker-marker").write_text(MARKER)
    (d / "tree" / "var" / "blob").write_bytes(os.urandom(2 << 20))
    raw = d / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    sh("sfdisk", "-q", raw, input="label: dos\nstart=2048, type=83, bootable\n")
    sh("mkfs.ext4", "-q", "-F", "-L", "root", "-E", f"offset={PART_OFFSET}", "-d", d / "tree", raw,
       f"{(DISK_SIZE - PART_OFFSET) >> 20}M")
    base = d / "base.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, base)
    raw.unlink()
    top = d / "master.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
    sh("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {PATTERN_OFFSET} 64k", top)
    from baker.fsutil import file_digest

    return Master(top, base, file_digest(top))


def vm_spec(**kw) -> VMSpec:
    args = {"name": "testvm", "cpus": 2, "memory_mb": 1024, "disk_size": DISK_SIZE, "firmware": "bios",
            "version": "1.2.0", "description": "Export test <image> & friends"}
    args.update(kw)
    return VMSpec(**args)


def context(out: Path, vm: VMSpec | None = None, src: Path | None = None) -> ExportContext:
    work = _root() / "work"
    work.mkdir(exist_ok=True, mode=0o700)
    return ExportContext(master=src or master().path, output_dir=out, work_dir=work, vm=vm or vm_spec(),
                         log=log)


@dataclass(frozen=True)
class AllExports:
    out: Path
    results: dict[str, ExportResult]
    seconds: float


@functools.cache
def all_exports() -> AllExports:
    """Every target with default options (vagrant twice: libvirt and virtualbox), in one run_exports."""
    import time

    out = _root() / "out"
    specs: list[tuple[str, object]] = [(t, cls.Options()) for t, cls in EXPORTERS.items()]
    specs.append(("vagrant", EXPORTERS["vagrant"].Options(provider="virtualbox")))  # same catalog
    start = time.monotonic()
    results = run_exports(context(out), specs, jobs=2)
    seconds = time.monotonic() - start
    by_key = {}
    for r in results:
        key = r.type if r.type not in by_key else f"{r.type}-virtualbox"
        by_key[key] = r
    return AllExports(out, by_key, seconds)


def scratch(name: str) -> Path:
    """A fresh directory for one test's own outputs."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_root()))


def compare(image: Path, fmt: str, *, strict: bool = False) -> subprocess.CompletedProcess[str]:
    """qemu-img compare master vs image; rc 0 = same content (a larger image whose tail is zero too)."""
    flags = ["-s"] if strict else []
    return sh("qemu-img", "compare", *flags, "-f", "qcow2", "-F", fmt, master().path, image, check=False)


def read_marker(image: Path, fmt: str) -> str:
    """Convert back to raw with qemu-img and read /etc/baker-marker out of the ext4 with debugfs."""
    raw = Path(tempfile.mkdtemp(dir=_root())) / "back.raw"
    sh("qemu-img", "convert", "-f", fmt, "-O", "raw", image, raw)
    try:
        return read_marker_raw(raw)
    finally:
        raw.unlink()


def read_marker_raw(raw: Path) -> str:
    return sh("debugfs", "-R", "cat /etc/baker-marker", f"{raw}?offset={PART_OFFSET}").stdout


def info(image: Path, fmt: str) -> dict:
    import json

    return json.loads(sh("qemu-img", "info", "--output=json", "-f", fmt, image).stdout)
