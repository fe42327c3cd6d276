#!/usr/bin/env python3
"""`make bench-scaling`: one template with N named builds, baked 1, 2, 4 ... at a time on this host.

    python bench/scaling.py [--jobs 1,2,4] [--builds 4] [--cpus 1] [--memory 1024] [--base IMAGE]
                            [--packages nginx-light | --trivial] [--accel auto|kvm|tcg]

Each build boots the base image (1 vCPU, 1024 MiB by default), waits for cloud-init, writes a marker,
runs `apt-get update` and installs --packages (--trivial: the marker only), and exports a compressed
qcow2. For every -j the same `baker build T -j J --force --no-store --json` runs them all (the runner:
one child `baker build` per build), while a sampler reads /proc every 0.5 s. Per -j it reports the
run's wall time, each build's wall time (its build_done event), the peak summed RSS of all QEMU
processes and of the whole process tree, the lowest MemAvailable seen (and how far it fell from
before the run), the highest 1-minute load average, and the host's CPU count; a table on stdout and
everything in bench/results/scaling-<UTC time>.json. Numbers only: the -j advice lives in the
README's "Scaling on one host", never in tests. Run it on an otherwise quiet host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from run import _rss, _tree, host_info, mib, run_group  # bench/run.py: process-tree memory from /proc

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@dataclass
class JobsRun:
    jobs: int
    ok: bool
    exit_code: int
    wall: float
    builds: dict[str, dict] = field(default_factory=dict)  # name -> {ok, seconds, phases}
    peak_qemu_rss: int = 0  # bytes, all QEMU processes of the run summed
    peak_tree_rss: int = 0  # bytes, the whole process tree (runner, child bakers, QEMU, qemu-img)
    peak_qemu_count: int = 0  # most QEMU processes seen at once
    mem_available_before: int = 0  # bytes, /proc/meminfo just before the run
    mem_available_min: int = 0
    load_max: float = 0.0  # highest 1-minute load average sampled
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str = ""


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Every 0.5 s: the run's summed RSS (all, QEMU only), QEMU count, MemAvailable, load average."""

    def __init__(self, run: JobsRun) -> None:
        super().__init__(daemon=True)
        self.pid, self.r = 0, run  # pid: set by run_group before it starts
        self.stop = threading.Event()

    def run(self) -> None:
        self.r.mem_available_min = self.r.mem_available_before
        while not self.stop.wait(0.5):
            total = qemu = count = 0
            for p in _tree(self.pid):
                rss, is_qemu = _rss(p)
                total += rss
                if is_qemu:
                    qemu, count = qemu + rss, count + 1
            r = self.r
            r.peak_tree_rss, r.peak_qemu_rss = max(r.peak_tree_rss, total), max(r.peak_qemu_rss, qemu)
            r.peak_qemu_count = max(r.peak_qemu_count, count)
            r.mem_available_min = min(r.mem_available_min, mem_available())
            r.load_max = max(r.load_max, os.getloadavg()[0])


def template_text(args: argparse.Namespace, base: Path) -> str:
    work = ["echo \"{{ name }}\" > /etc/scaling-marker"]
    if not args.trivial:
        work.append("apt-get update -q")
        if args.packages.strip():
            work.append(f"apt-get install -y -q --no-install-recommends {args.packages}")
    inline = ", ".join(json.dumps(line) for line in work)
    builds = ", ".join(f"{{name: b{i}}}" for i in range(1, args.builds + 1))
    return f"""\
name: scaling
source:
  cloud_image: {{url: '{base}', checksum: 'file:base.sums'}}
machine: {{cpus: {args.cpus}, memory: {args.memory}, disk_size: 4G}}
communicator: {{ssh_timeout: 30m}}
provisioners:
  - {{type: shell, name: wait for cloud-init, script: '{ROOT / "provisioners/wait-cloud-init.sh"}'}}
  - type: shell
    name: guest work
    inline: [{inline}]
    environment: {{DEBIAN_FRONTEND: noninteractive}}
exports: [{{type: qcow2, compress: true}}]
policy: {{enabled: false}}
builds: [{builds}]
"""


def run_jobs(jobs: int, work: Path, accel: str, timeout: float) -> JobsRun:
    """One `baker build -j J` over every build, sampled; its process group killed on the way out."""
    argv = [sys.executable, "-m", "baker", "build", "scaling.yaml", "-j", str(jobs), "--force", "--no-store",
            "--json", "--accel", accel]
    r = JobsRun(jobs, False, -1, 0.0, mem_available_before=mem_available())
    r.wall, code, lines = run_group(argv, Sampler(r), cwd=work, env={"TMPDIR": str(work)}, timeout=timeout,
                                    label=f"-j {jobs}")
    r.exit_code, r.ok = code, code == 0
    r.load_after = os.getloadavg()
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        b = r.builds.setdefault(e.get("build", "?"), {"ok": False, "seconds": None, "phases": {}})
        if e.get("event") == "step_done":
            b["phases"][e["step"]] = round(e["seconds"], 2)
        elif e.get("event") == "build_done":
            b["ok"], b["seconds"] = True, round(e["seconds"], 2)
        elif e.get("event") == "build_failed":
            b["error"] = f"{e.get('step')}: {e.get('message')}"
    if not r.ok:
        r.error = "\n".join(lines[-20:])
    return r


def print_table(runs: list[JobsRun], cpus: int, per_build_cpus: int) -> None:
    print(f"\nhost: {cpus} CPUs; each build {per_build_cpus} vCPU(s)")
    print(f"{'-j':>3} {'ok':>5} {'wall':>8} {'speedup':>7} {'per build min/med/max':>22} {'QEMU peak':>10} "
          f"{'tree peak':>10} {'MemAvail min':>12} {'(fell)':>9} {'load max':>8}")
    first = next((r for r in runs if r.ok), None)
    for r in runs:
        secs = [b["seconds"] for b in r.builds.values() if b.get("seconds") is not None]
        per = (f"{min(secs):.0f}/{statistics.median(secs):.0f}/{max(secs):.0f}s" if secs else "-")
        good = sum(1 for b in r.builds.values() if b.get("ok"))
        speed = f"{first.wall / r.wall:.2f}x" if first and r.ok else "-"
        print(f"{r.jobs:>3} {good:>2}/{len(r.builds):<2} {r.wall:7.1f}s {speed:>7} {per:>22} "
              f"{mib(r.peak_qemu_rss):>10} {mib(r.peak_tree_rss):>10} {mib(r.mem_available_min):>12} "
              f"{mib(r.mem_available_before - r.mem_available_min):>9} {r.load_max:8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="1,2,4", help="comma-separated -j values, run in this order")
    ap.add_argument("--builds", type=int, default=4, help="named builds in the template (default 4)")
    ap.add_argument("--cpus", type=int, default=1, help="vCPUs per build (default 1)")
    ap.add_argument("--memory", type=int, default=1024, help="MiB per build (default 1024)")
    ap.add_argument("--base", type=Path, help="base image (default: scripts/build-base-image --print-path)")
    ap.add_argument("--packages", default="nginx-light", help="installed after apt-get update ('' for none)")
    ap.add_argument("--trivial", action="store_true", help="only write a marker (no apt): to try the bench")
    ap.add_argument("--accel", default=os.environ.get("BAKER_ACCEL", "auto"), choices=["auto", "kvm", "tcg"])
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per -j run before it is killed")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: run_group kills the builds
    try:
        jobs = [int(j) for j in args.jobs.split(",") if j.strip()]
    except ValueError:
        ap.error(f"--jobs takes comma-separated numbers, got {args.jobs!r}")
    if not jobs or min(jobs) < 1 or args.builds < 1 or args.cpus < 1 or args.memory < 256:
        ap.error("--jobs and --builds need numbers >= 1, --cpus >= 1, --memory >= 256")
    base = args.base or Path(subprocess.run([str(ROOT / "scripts/build-base-image"), "--print-path"],
                                            capture_output=True, text=True, check=True).stdout.strip())
    base = base.resolve()
    sums = Path(f"{base}.sha256")
    if not base.is_file():
        print(f"scaling: base image {base} missing: run make base-image", file=sys.stderr)
        return 2
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    cpus = os.cpu_count() or 1
    work_text = "marker" if args.trivial else f"apt-get update; install {args.packages}"
    report: dict = {"started": started, "base_image": str(base), "host_cpus": cpus,
                    "host_cpus_usable": len(os.sched_getaffinity(0)),
                    "host_memory_total": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                    "per_build": {"cpus": args.cpus, "memory_mb": args.memory, "accel": args.accel,
                                  "work": work_text,
                                  "export": "qcow2, compressed"},
                    "builds": args.builds, "jobs": jobs, "host_before": host_info()}
    root = Path(tempfile.mkdtemp(prefix="baker-scaling-"))
    runs: list[JobsRun] = []
    try:
        for j in jobs:
            work = root / f"j{j}"
            work.mkdir()
            (work / "base.sums").write_text(sums.read_text() if sums.is_file() else "")
            (work / "scaling.yaml").write_text(template_text(args, base))
            print(f"scaling: {args.builds} builds, -j {j} ...", flush=True)
            r = run_jobs(j, work, args.accel, args.timeout)
            result = "ok" if r.ok else f"FAILED (exit {r.exit_code})"
            print(f"scaling:   {result} in {r.wall:.1f}s", flush=True)
            if not r.ok:
                print(r.error, file=sys.stderr)
            runs.append(r)
            shutil.rmtree(work, ignore_errors=True)  # the next -j starts with as much disk as this one
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["host_after"] = host_info()
    report["runs"] = [asdict(r) for r in runs]
    print_table(runs, cpus, args.cpus)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"scaling-{started}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
