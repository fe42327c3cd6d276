#!/usr/bin/env python3
"""Time every export target on one disk, next to the master and a plain `qemu-img convert`.

    python3 bench/export_bench.py IMAGE.qcow2 [--types qcow2,vmdk,...] [--keep DIR] [--jobs N]
    python3 bench/export_bench.py IMAGE.qcow2 --demo [--jobs 2]

Each target runs alone (jobs=1 unless --jobs) so the times are comparable; the baseline is
`qemu-img convert -O qcow2` of the same disk. --demo instead runs the nine exports of
templates/debian-12-nginx.yaml in one run_exports, as the export step does (it uses --jobs 2 by
default), and prints the run's wall time and each export's own time (shared disks included once).
Sizes are file sizes (apparent) and allocated bytes (what a sparse-aware copy moves); cpu is the CPU
time of this process and its commands (less disturbed by other load than wall time). The master is
never modified.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
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


# the exports of templates/debian-12-nginx.yaml (`make demo`), in its order
DEMO: list[tuple[str, str, dict]] = [
    ("qcow2 compress", "qcow2", {"compress": True}),
    ("vmdk", "vmdk", {}),
    ("ova", "ova", {}),
    ("vhd azure", "vhd", {"azure": True}),
    ("vhdx", "vhdx", {}),
    ("vagrant libvirt", "vagrant", {"provider": "libvirt"}),
    ("vagrant virtualbox", "vagrant", {"provider": "virtualbox"}),
    ("libvirt", "libvirt", {}),
    ("gce", "gce", {}),
]


def cpu() -> float:
    """CPU seconds used so far by this process and the commands it waited for: unlike wall time, barely
    changed by other load on the machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def row(label: str, seconds: float | None, cpu_s: float | None, size: int, alloc: int) -> str:
    t = f"{seconds:8.2f}s" if seconds is not None else " " * 9
    c = f"{cpu_s:8.2f}s" if cpu_s is not None else " " * 9
    return f"{label:<36} {t} {c} {human_size(size):>11} {human_size(alloc):>11}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--types", default="", help="comma-separated export types (default: all variants)")
    ap.add_argument("--keep", type=Path, help="write outputs here and keep them")
    ap.add_argument("--jobs", type=int, default=None, help="export jobs (default 1; 2 with --demo)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--demo", action="store_true",
                    help="run the demo template's nine exports together and time the whole run")
    args = ap.parse_args()
    if args.jobs is None:
        args.jobs = 2 if args.demo else 1
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
    rows: list[dict] = [{"label": label, "seconds": None, "cpu": None, "size": args.image.stat().st_size,
                         "allocated": allocated(args.image)}]
    try:
        if args.demo:
            rows += demo_rows(ctx, args.jobs)
            return report(rows, args.json)
        base = root / "baseline.qcow2"
        start, cpu0 = time.monotonic(), cpu()
        run(["qemu-img", "convert", "-O", "qcow2", args.image, base])
        rows.append({"label": "qemu-img convert -O qcow2", "seconds": time.monotonic() - start,
                     "cpu": cpu() - cpu0, "size": base.stat().st_size, "allocated": allocated(base)})
        base.unlink()
        for label, type_name, opts in VARIANTS:
            if wanted and type_name not in wanted:
                continue
            cpu0 = cpu()
            (result,) = run_exports(ctx, [(type_name, EXPORTERS[type_name].Options(**opts))], jobs=args.jobs)
            rows.append({"label": label, "seconds": result.seconds, "cpu": cpu() - cpu0,
                         "size": sum(f.size for f in result.files),
                         "allocated": sum(allocated(f.path) for f in result.files)})
            if not args.keep:
                for f in result.files:
                    f.path.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report(rows, args.json)


def demo_rows(ctx: ExportContext, jobs: int) -> list[dict]:
    specs = [(t, EXPORTERS[t].Options(**o)) for _, t, o in DEMO]
    start, cpu0 = time.monotonic(), cpu()
    results = run_exports(ctx, specs, jobs=jobs)
    wall, used = time.monotonic() - start, cpu() - cpu0
    rows = [{"label": label, "seconds": r.seconds, "cpu": None, "size": sum(f.size for f in r.files),
             "allocated": sum(allocated(f.path) for f in r.files)}
            for (label, _, _), r in zip(DEMO, results, strict=True)]
    rows.append({"label": f"all nine, wall (--jobs {jobs})", "seconds": wall, "cpu": used,
                 "size": sum(r["size"] for r in rows), "allocated": sum(r["allocated"] for r in rows)})
    return rows


def report(rows: list[dict], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'target':<36} {'time':>9} {'cpu':>9} {'file size':>11} {'allocated':>11}")
        for r in rows:
            print(row(r["label"], r["seconds"], r["cpu"], r["size"], r["allocated"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
