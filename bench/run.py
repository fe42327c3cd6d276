#!/usr/bin/env python3
"""`make bench`: the same bake three ways on one base image, then the nine-export demo.

    python bench/run.py [--runs N | --quick] [--only script,packer,baker,baker-lean] [--no-demo]

(a) bench/plain-bake.sh (qemu + ssh + apt + poweroff + `qemu-img convert -c`), (b) HashiCorp Packer's
QEMU builder with bench/packer/debian-12-nginx.json (Debian's packer package, installed here with
apt-get when missing; skipped with the reason when it cannot be), (c) baker with
bench/templates/debian-12-nginx-qcow2.yaml, (d) baker-lean: the same template with its qcow2 in zstd
and 256 KiB clusters (for readers with QEMU >= 5.1; Packer could pass the same through qemu_img_args).
All boot the project's base image through a qcow2
overlay, under TCG, with 2 vCPUs and 1024 MiB, and install nginx-light. For each: wall time
(min/median), time per phase, output size, peak memory of the run's process tree (summed RSS,
sampled from /proc) and of its QEMU, and the ratios baker/script, baker/Packer. Then
templates/debian-12-nginx.yaml (nine exports) once, with its export phase. Results go to
bench/results/bench-<UTC time>.json. Numbers only: targets live in the report, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
CPUS, MEMORY_MB, DISK = 2, 1024, "4G"
BAKER = [sys.executable, "-m", "baker"]
TOOLS = ("script", "packer", "baker", "baker-lean")
# Packer's own messages that start each phase (packer 1.6 QEMU builder)
PACKER_MARKS = [("ssh", "Connected to SSH!"), ("provision", "Gracefully halting virtual machine"),
                ("shutdown", "Converting hard drive"), ("export", None)]


@dataclass
class Run:
    tool: str
    ok: bool
    wall: float
    phases: dict[str, float] = field(default_factory=dict)
    size: int = 0
    peak_rss: int = 0  # bytes, the whole process tree
    peak_qemu_rss: int = 0
    error: str = ""


# --- process tree memory ---------------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _rss(pid: int) -> tuple[int, bool]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return 0, False
    kb = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
    # not /proc/PID/comm: baker names its QEMU process after the build (-name ...,process=...)
    return kb * 1024, os.path.basename(argv0).startswith(b"qemu-system")


class MemorySampler(threading.Thread):
    """Peak summed RSS of a process tree (and of its QEMU), sampled every 0.25 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_qemu = 0, 0, 0  # pid: set by run_group before it starts
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            total = qemu = 0
            for p in _tree(self.pid):
                rss, is_qemu = _rss(p)
                total += rss
                qemu += rss if is_qemu else 0
            self.peak, self.peak_qemu = max(self.peak, total), max(self.peak_qemu, qemu)


# --- running one tool ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(argv: list[str], sampler: threading.Thread, *, cwd: Path, env: dict[str, str] | None = None,
              on_line=None, timeout: float = 3600, label: str = "") -> tuple[float, int, list[str]]:
    """Run argv in its own process group while `sampler` (a thread with a `stop` event, started here)
    watches it; kill the group on the way out whatever happens, so no QEMU outlives the bench.
    Returns (wall seconds, exit code, output lines)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sampler.pid = proc.pid  # type: ignore[attr-defined]
    sampler.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if on_line:
                on_line(line, time.monotonic() - start)
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{label} ran longer than {timeout:.0f}s")
        proc.wait()
    finally:
        wall = time.monotonic() - start
        sampler.stop.set()  # type: ignore[attr-defined]
        sampler.join()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return wall, proc.returncode, lines


def timed(tool: str, argv: list[str], *, env: dict[str, str] | None = None, on_line=None,
          timeout: float = 3600) -> tuple[Run, list[str]]:
    """One tool's run, timed, with its peak memory."""
    sampler = MemorySampler()
    wall, code, lines = run_group(argv, sampler, cwd=ROOT, env=env, on_line=on_line, timeout=timeout,
                                  label=tool)
    ok = code == 0
    run = Run(tool, ok, wall, peak_rss=sampler.peak, peak_qemu_rss=sampler.peak_qemu,
              error="" if ok else "\n".join(lines[-15:]))
    return run, lines


def run_script(base: Path, work: Path) -> Run:
    out = work / "script.qcow2"
    run, lines = timed("script", ["sh", str(BENCH / "plain-bake.sh"), str(base), str(out), str(free_port()),
                                  str(CPUS), str(MEMORY_MB), DISK], env={"TMPDIR": str(work)})
    for line in lines:
        if line.startswith("phase "):
            _, name, secs = line.split()
            run.phases[name] = float(secs)
    run.size = out.stat().st_size if out.exists() else 0
    return run


def ensure_packer() -> tuple[str | None, str]:
    """(packer path, version) or (None, why not). Installs Debian's package when root and missing."""
    if shutil.which("packer") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing packer (apt-get install packer) ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "packer"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = shutil.which("packer")
    if path is None:
        return None, "packer is not installed and could not be installed (apt-get install packer)"
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()
    return path, version


def run_packer(packer: str, base: Path, checksum: str, work: Path) -> Run:
    seed = work / "seed"
    seed.mkdir()
    key = work / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (seed / "user-data").write_text(
        "#cloud-config\nusers:\n  - name: bench\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    shell: /bin/bash\n"
        f"    lock_passwd: true\n    ssh_authorized_keys: [\"{(work / 'key.pub').read_text().strip()}\"]\n"
        "ssh_pwauth: false\n")
    (seed / "meta-data").write_text("instance-id: packer-bench\nlocal-hostname: packer-bench\n")
    seed_iso = work / "seed.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o", str(seed_iso),
                    str(seed / "user-data"), str(seed / "meta-data")], check=True, capture_output=True)
    out = work / "out"
    marks: dict[str, float] = {}

    def on_line(line: str, t: float) -> None:
        for name, text in PACKER_MARKS:
            if text and text in line and name not in marks:
                marks[name] = t

    variables = {"base_image": str(base), "base_checksum": checksum, "seed_iso": str(seed_iso),
                 "ssh_key": str(key), "output_dir": str(out), "cpus": str(CPUS), "memory": str(MEMORY_MB),
                 "disk_size": str(int(DISK.rstrip("G")) * 1024)}
    argv = [packer, "build", "-color=false"]
    for k, v in variables.items():
        argv += ["-var", f"{k}={v}"]
    argv.append(str(BENCH / "packer" / "debian-12-nginx.json"))
    run, _ = timed("packer", argv, on_line=on_line,
                   env={"PACKER_CACHE_DIR": str(work / "cache"), "CHECKPOINT_DISABLE": "1",
                        "TMPDIR": str(work)})
    prev = 0.0
    for name, _ in PACKER_MARKS:
        end = marks.get(name, run.wall if name == "export" else None)
        if end is not None:
            run.phases[name] = round(end - prev, 2)
            prev = end
    image = out / "debian-12-nginx.qcow2"
    run.size = image.stat().st_size if image.exists() else 0
    return run


def baker_phases(events: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Phases from --json step_done events, and the per-export seconds of the export step."""
    phases: dict[str, float] = {}
    for e in events:
        if e.get("event") != "step_done":
            continue
        step = e["step"]
        name = ("ssh" if step in ("start-vm", "wait-ssh") else "provision" if step.startswith("provision[")
                else step if step in ("shutdown", "export") else "other")
        phases[name] = round(phases.get(name, 0.0) + e["seconds"], 2)
    return phases, {}


def run_baker(template: Path, base: Path, checksum: str, work: Path,
              extra: list[str] | None = None) -> tuple[Run, dict]:
    out = work / "out"
    argv = [*BAKER, "build", str(template), "--json", "--no-store", "-o", str(out), *(extra or [])]
    run, lines = timed("baker", argv, env={"BAKER_ACCEL": "tcg", "BAKER_BASE_IMAGE": str(base),
                                           "BAKER_BASE_CHECKSUM": checksum, "TMPDIR": str(work)})
    events = []
    for line in lines:
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    run.phases, _ = baker_phases(events)
    manifest: dict = {}
    if (out / "manifest.json").is_file():
        manifest = json.loads((out / "manifest.json").read_text())
        disks = [a for a in manifest.get("artifacts", []) if a.get("kind") == "disk"]
        run.size = disks[0]["size"] if disks else 0
    return run, manifest


# --- report ----------------------------------------------------------------------------------------

def summary(runs: list[Run]) -> dict:
    good = [r for r in runs if r.ok]
    if not good:
        return {"runs": len(runs), "ok": 0, "error": runs[-1].error if runs else ""}
    walls = [r.wall for r in good]
    names = sorted({n for r in good for n in r.phases})
    return {"runs": len(runs), "ok": len(good), "wall_min": min(walls),
            "wall_median": statistics.median(walls),
            "phases_median": {n: statistics.median(r.phases.get(n, 0.0) for r in good) for n in names},
            "size": statistics.median(r.size for r in good),
            "peak_rss": max(r.peak_rss for r in good), "peak_qemu_rss": max(r.peak_qemu_rss for r in good)}


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def print_table(results: dict, skipped: dict[str, str]) -> None:
    print(f"\n{'tool':10} {'runs':>4} {'wall min':>9} {'median':>8} {'output':>9} {'peak RSS':>9} "
          f"{'QEMU RSS':>9}  phases (median, s)")
    for tool in TOOLS:
        if tool in skipped:
            print(f"{tool:10} skipped: {skipped[tool]}")
            continue
        s = results.get(tool)
        if not s:
            continue
        if not s.get("ok"):
            print(f"{tool:10} {s['runs']:>4} failed: {s.get('error', '')[-300:]}")
            continue
        phases = ", ".join(f"{k} {v:.1f}" for k, v in s["phases_median"].items())
        print(f"{tool:10} {s['ok']:>4} {s['wall_min']:8.1f}s {s['wall_median']:7.1f}s {mib(s['size']):>9} "
              f"{mib(s['peak_rss']):>9} {mib(s['peak_qemu_rss']):>9}  {phases}")
    for mine in ("baker", "baker-lean"):
        b = results.get(mine, {})
        for other in ("script", "packer"):
            o = results.get(other, {})
            if b.get("ok") and o.get("ok"):
                print(f"{mine}/{other}: wall {b['wall_median'] / o['wall_median']:.2f}x (median), "
                      f"{b['wall_min'] / o['wall_min']:.2f}x (min), output {b['size'] / o['size']:.2f}x")


def host_info() -> dict:
    others = subprocess.run(["pgrep", "-a", "-f", "qemu-system|pytest|baker build"], capture_output=True,
                            text=True).stdout.splitlines()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "kernel": platform.release(),
            "qemu": qemu.splitlines()[0] if qemu else "", "other_processes": [o[:160] for o in others]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per tool (default 3)")
    ap.add_argument("--quick", action="store_true", help="one run each")
    ap.add_argument("--only", default=",".join(TOOLS), help="comma-separated tools to run")
    ap.add_argument("--no-demo", action="store_true", help="skip the nine-export demo build")
    ap.add_argument("--results", type=Path, default=BENCH / "results")
    args = ap.parse_args()
    # a SIGTERM (timeout, kill) unwinds like Ctrl-C, so `timed` kills the tool's process group
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs = 1 if args.quick else max(1, args.runs)
    tools = [t for t in TOOLS if t in args.only.split(",")]
    base = Path(subprocess.run([str(ROOT / "scripts/build-base-image"), "--print-path"], capture_output=True,
                               text=True, check=True).stdout.strip())
    if not base.is_file():
        print(f"bench: base image {base} missing: run make base-image", file=sys.stderr)
        return 2
    sums = Path(f"{base}.sha256")
    checksum = f"sha256:{sums.read_text().split()[0]}" if sums.is_file() else "none"
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    machine = {"cpus": CPUS, "memory_mb": MEMORY_MB, "disk": DISK, "accelerator": "tcg"}
    report: dict = {"started": started, "runs_per_tool": runs, "machine": machine, "base_image": str(base),
                    "host_before": host_info()}
    skipped: dict[str, str] = {}
    packer = None
    if "packer" in tools:
        packer, version = ensure_packer()
        report["packer_version"] = version
        if packer is None:
            skipped["packer"] = version
    all_runs: dict[str, list[Run]] = {t: [] for t in tools if t not in skipped}
    root = Path(tempfile.mkdtemp(prefix="baker-bench-"))
    try:
        for i in range(runs):
            for tool in all_runs:  # interleaved, so a change in host load hits every tool alike
                work = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=root))
                print(f"bench: {tool} run {i + 1}/{runs} ...", flush=True)
                if tool == "script":
                    r = run_script(base, work)
                elif tool == "packer":
                    assert packer is not None
                    r = run_packer(packer, base, checksum, work)
                else:
                    lean = ["-var", "compression_type=zstd", "-var", "cluster_size=262144"]
                    r, _ = run_baker(BENCH / "templates/debian-12-nginx-qcow2.yaml", base, checksum, work,
                                     ["-var", f"base_image={base}", "-var", f"base_checksum={checksum}",
                                      *(lean if tool == "baker-lean" else [])])
                    r.tool = tool
                print(f"bench:   {'ok' if r.ok else 'FAILED'} in {r.wall:.1f}s, {mib(r.size)}, "
                      f"phases {r.phases}", flush=True)
                if not r.ok:
                    print(r.error, file=sys.stderr)
                all_runs[tool].append(r)
                shutil.rmtree(work, ignore_errors=True)
        if not args.no_demo:
            print("bench: the nine-export demo (templates/debian-12-nginx.yaml) ...", flush=True)
            work = Path(tempfile.mkdtemp(prefix="demo-", dir=root))
            r, manifest = run_baker(ROOT / "templates/debian-12-nginx.yaml", base, checksum, work)
            report["demo"] = {**asdict(r), "exports": manifest.get("exports", []),
                              "artifacts": [{k: a[k] for k in ("file", "size")}
                                            for a in manifest.get("artifacts", [])]}
            print(f"bench:   demo {'ok' if r.ok else 'FAILED'} in {r.wall:.1f}s, export phase "
                  f"{r.phases.get('export', 0):.1f}s, phases {r.phases}", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["host_after"] = host_info()
    report["runs"] = {t: [asdict(r) for r in rs] for t, rs in all_runs.items()}
    report["summary"] = {t: summary(rs) for t, rs in all_runs.items()}
    report["skipped"] = skipped
    p = report["summary"].get("packer", {})
    for mine in ("baker", "baker-lean"):
        b = report["summary"].get(mine, {})
        if b.get("ok") and p.get("ok"):
            report.setdefault("targets", {})[mine] = {"wall_vs_packer": b["wall_median"] / p["wall_median"],
                                                      "size_vs_packer": b["size"] / p["size"]}
    if "demo" in report:
        report.setdefault("targets", {})["demo_export_seconds"] = report["demo"]["phases"].get("export")
    print_table(report["summary"], skipped)
    if "demo" in report:
        d = report["demo"]
        per = ", ".join(f"{e['type']} {e['seconds']:.1f}" for e in d["exports"])
        print(f"demo (nine exports): wall {d['wall']:.1f}s, export phase {d['phases'].get('export', 0):.1f}s "
              f"({per})")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"bench-{started}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    failed = [t for t, s in report["summary"].items() if not s.get("ok")]
    return 1 if failed or not report.get("demo", {"ok": True})["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
