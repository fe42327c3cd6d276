#!/usr/bin/env python3
"""Layered images: an app image baked from zero (its golden base first) vs rebuilt on an unchanged base.

    python bench/layers_bench.py

In a fresh cache and output folder: (1) `baker build templates/debian-12-app-nginx.yaml` with nothing
built yet: baker bakes debian-12-golden first, then the app layer on it; (2) the app template with
one changed provisioner line (a copy written beside it, so its relative paths hold): the golden
base is up to date and only the layer is baked; (3) the same again with `--if-changed`: nothing
to do. Prints wall times, the ratio (2)/(1) and each build's step times. Numbers only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "templates" / "debian-12-app-nginx.yaml"


def build(template: Path, out: Path, env: dict[str, str], *extra: str) -> tuple[float, list[dict]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "baker", "build", str(template), "--json", "-o", str(out),
                           *extra], capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"build of {template.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                 f"\n{proc.stderr[-3000:]}")
    return wall, [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


def step_times(events: list[dict]) -> dict[str, dict[str, float]]:
    """build name -> step -> seconds (a layer's parent build reports under its own name)."""
    out: dict[str, dict[str, float]] = {}
    for e in events:
        if e.get("event") == "step_done":
            out.setdefault(e.get("build", "?"), {})[e["step"]] = e["seconds"]
    return out


def main() -> int:
    base = subprocess.run([str(ROOT / "scripts" / "build-base-image"), "--print-path"], check=True,
                          capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="baker-layers-bench-"))
    env = {**os.environ, "BAKER_CACHE_DIR": str(work / "cache"), "BAKER_STORE": str(work / "store"),
           "BAKER_BASE_IMAGE": base, "BAKER_BASE_CHECKSUM": f"file:{base}.sha256"}
    out = work / "images" / "debian-12-app-nginx"  # the golden base goes beside it
    changed = APP.with_name(f".bench-layers-{os.getpid()}.yaml")
    try:
        cold, e1 = build(APP, out, env)
        line = "      - nginx -t\n"
        changed.write_text(APP.read_text().replace(line, line + "      - echo changed\n"))
        warm, e2 = build(changed, out, env)
        noop, _ = build(changed, out, env, "--if-changed")
    finally:
        changed.unlink(missing_ok=True)
    print(f"app from zero (golden base, then the layer): {cold:6.1f}s")
    print(f"app changed, golden up to date:              {warm:6.1f}s  ({warm / cold:.2f}x)")
    print(f"nothing changed (--if-changed):              {noop:6.1f}s\n")
    for label, events in (("from zero", e1), ("app changed", e2)):
        for name, steps in step_times(events).items():
            total = sum(steps.values())
            top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:5])
            print(f"{label:12s} {name:22s} {total:6.1f}s  ({top})")
    print(f"\nkept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
