#!/usr/bin/env python3
"""Time a real build of a template and report step times and artifact sizes (for issue notes).

    python bench/run.py [TEMPLATE] [-var k=v ...]      # default: templates/debian-12-nginx.yaml

Numbers only: targets live here, never as timed asserts in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    default = str(ROOT / "templates/debian-12-nginx.yaml")
    template = argv[0] if argv and not argv[0].startswith("-") else default
    extra = argv[1:] if argv and not argv[0].startswith("-") else argv
    out = Path(tempfile.mkdtemp(prefix="baker-bench-")) / "out"
    start = time.monotonic()
    argv_build = [sys.executable, "-m", "baker", "build", template, "--json", "-o", str(out), *extra]
    proc = subprocess.run(argv_build, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - start
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    print(f"template: {template}\nexit code: {proc.returncode}\nwall time: {wall:.1f}s\n")
    print(f"{'step':55s} {'seconds':>8s}")
    for e in events:
        if e["event"] == "step_done":
            print(f"{e['step']:55s} {e['seconds']:8.1f}")
    if proc.returncode == 0:
        manifest = json.loads((out / "manifest.json").read_text())
        print(f"\n{'artifact':45s} {'MiB':>9s}")
        for a in manifest["artifacts"]:
            print(f"{a['file']:45s} {a['size'] / 2**20:9.1f}")
        times = ", ".join(f"{x['type']} {x['seconds']:.1f}s" for x in manifest["exports"])
        print(f"\nexport times: {times}")
        machine = manifest["machine"]
        print(f"accelerator: {machine['accelerator']} ({machine['accelerator_note']})")
        print(f"output kept in {out}")
    else:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
