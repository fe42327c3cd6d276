#!/usr/bin/env python3
"""Full bake vs a bake resumed from checkpoints, when only the last provisioner changed.

    python bench/checkpoint_bench.py [--all-exports]

Builds a copy of templates/debian-12-nginx.yaml (one compressed qcow2 export, or its nine exports
with --all-exports) with checkpoints on, twice, in a fresh cache: the second run changes only the
last provisioner. Prints wall times, the ratio and the step times of both. Numbers only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "templates" / "debian-12-nginx.yaml"


def variant(run: int, all_exports: bool) -> str:
    text = SOURCE.read_text()
    if not all_exports:
        text = re.sub(r"(?ms)^exports:\n.*", "exports:\n  - {type: qcow2, compress: true}\n", text)
    # the last provisioner's last inline line gains a run marker: only that step changes
    return text.replace("characters available\"; fi'", f"characters available\"; fi; echo bench run {run}'")


def build(template: Path, out: Path, env: dict[str, str]) -> tuple[float, list[dict], int]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "baker", "build", str(template), "--json", "-o", str(out),
                           "--no-store"], capture_output=True, text=True, cwd=ROOT, env=env)
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
    return time.monotonic() - start, events, proc.returncode


def main(argv: list[str]) -> int:
    all_exports = "--all-exports" in argv
    base = subprocess.run([str(ROOT / "scripts" / "build-base-image"), "--print-path"], check=True,
                          capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="baker-ckpt-bench-"))
    env = {**os.environ, "BAKER_CACHE_DIR": str(work / "cache"), "BAKER_BASE_IMAGE": base,
           "BAKER_BASE_CHECKSUM": f"file:{base}.sha256"}
    template = SOURCE.with_name(f".bench-checkpoint-{os.getpid()}.yaml")  # beside it: relative paths work
    results = []
    try:
        for run in (1, 2):
            template.write_text("checkpoints: true\n" + variant(run, all_exports))
            results.append(build(template, work / f"out{run}", env))
            if results[-1][2] != 0:
                return results[-1][2]
    finally:
        template.unlink(missing_ok=True)
    (full, e1, _), (resumed, e2, _) = results
    print(f"exports: {'all nine' if all_exports else 'one compressed qcow2'}")
    print(f"full bake (saving checkpoints): {full:6.1f}s")
    print(f"last provisioner changed:       {resumed:6.1f}s  ({resumed / full:.2f}x the full bake)\n")
    steps1 = {e["step"]: e["seconds"] for e in e1 if e["event"] == "step_done"}
    steps2 = {e["step"]: e["seconds"] for e in e2 if e["event"] == "step_done"}
    print(f"{'step':55s} {'full':>7s} {'resumed':>8s}")
    for name in steps1:
        print(f"{name[:55]:55s} {steps1[name]:7.1f} {steps2.get(name, 0.0):8.1f}")
    print(f"\nkept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
