#!/usr/bin/env python3
"""Time every export target on one disk, next to the master and a plain `qemu-img convert`.

    python3 bench/export_bench.py IMAGE.qcow2 [--types qcow2,vmdk,...] [--keep DIR] [--jobs N]

Each target runs alone (jobs=1 unless --jobs) so the times are comparable; the baseline is
`qemu-img convert -O qcow2` of the same disk. Sizes are file sizes (apparent) and allocated
bytes (what a sparse-aware copy moves). The master is never modified.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baker.export import EXPORTERS, ExportContext, VMSpec, run_exports
from baker.proc import run
from baker.units import human_size

# (label, type, options) — defaults, plus the variants users pick most
VARIANTS: list[tuple[str, str, dict]] = [
    ("qcow2", "qcow2", {}),
    ("qcow2 compress=zlib", "qcow2", {"compress": True, "filename": "c-zlib.qcow2"}),
    ("qcow2 compress=zstd", "qcow2",
     {"compress": True, "compression_type": "zstd", "filename": "c-zstd.qcow2"}),
    ("raw", "raw", {}),
    ("gce (tar.gz)", "gce", {}),
    ("vmdk streamOptimized", "vmdk", {}),
    ("vmdk monolithicSparse", "vmdk", {"subformat": "monolithicSparse", "filename": "ms.vmdk"}),
    ("ova", "ova", {}),
    ("ovf", "ovf", {}),
    ("vhd dynamic", "vhd", {}),
    ("vhd azure (fixed)", "vhd", {"azure": True, "filename": "azure.vhd"}),
    ("vhdx", "vhdx", {}),
    ("vagrant libvirt", "vagrant", {"catalog": False}),
    ("vagrant virtualbox", "vagrant", {"provider": "virtualbox", "catalog": False}),
    ("libvirt", "libvirt", {}),
]


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def row(label: str, seconds: float | None, size: int, alloc: int) -> str:
    t = f"{seconds:8.2f}s" if seconds is not None else " " * 9
    return f"{label:<36} {t} {human_size(size):>11} {human_size(alloc):>11}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--types", default="", help="comma-separated export types (default: all variants)")
    ap.add_argument("--keep", type=Path, help="write outputs here and keep them")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    info = json.loads(run(["qemu-img", "info", "--output=json", args.image]).stdout)
    root = Path(tempfile.mkdtemp(prefix="export-bench-"))
    out = args.keep or root / "out"
    out.mkdir(parents=True, exist_ok=True)
    vm = VMSpec(name=args.image.stem, cpus=2, memory_mb=2048, disk_size=int(info["virtual-size"]),
                firmware="bios")
    ctx = ExportContext(args.image, out, root / "work", vm, logging.getLogger("bench"))
    wanted = {t for t in args.types.split(",") if t}
    label = f"master ({info['format']}, virtual {human_size(info['virtual-size'])})"
    rows: list[dict] = [{"label": label, "seconds": None, "size": args.image.stat().st_size,
                         "allocated": allocated(args.image)}]
    try:
        base = root / "baseline.qcow2"
        start = time.monotonic()
        run(["qemu-img", "convert", "-O", "qcow2", args.image, base])
        rows.append({"label": "qemu-img convert -O qcow2", "seconds": time.monotonic() - start,
                     "size": base.stat().st_size, "allocated": allocated(base)})
        base.unlink()
        for label, type_name, opts in VARIANTS:
            if wanted and type_name not in wanted:
                continue
            (result,) = run_exports(ctx, [(type_name, EXPORTERS[type_name].Options(**opts))], jobs=args.jobs)
            rows.append({"label": label, "seconds": result.seconds, "size": sum(f.size for f in result.files),
                         "allocated": sum(allocated(f.path) for f in result.files)})
            if not args.keep:
                for f in result.files:
                    f.path.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'target':<36} {'time':>9} {'file size':>11} {'allocated':>11}")
        for r in rows:
            print(row(r["label"], r["seconds"], r["size"], r["allocated"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
