#!/usr/bin/env python3
"""Time one template with two named builds, run one after the other (-j 1) and side by side (-j 2).

    python bench/multi_bench.py [BASE_IMAGE]     # default: scripts/build-base-image --print-path

Each build boots the base image, runs one shell provisioner and exports an uncompressed qcow2.
Numbers only: targets live here, never as timed asserts in tests. Measured 2026-12-06 on the
2-core host while other builds ran (load ~9): -j 1 261 s, -j 2 214 s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    base = argv[0] if argv else subprocess.run([str(ROOT / "scripts/build-base-image"), "--print-path"],
                                               capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="baker-multi-bench-"))
    (work / "base.sums").write_text(Path(f"{base}.sha256").read_text())
    (work / "mb.yaml").write_text(f"""\
name: mb
source:
  cloud_image: {{url: '{base}', checksum: 'file:base.sums'}}
machine: {{cpus: 1, memory: 768, disk_size: 3G}}
provisioners: [{{type: shell, inline: ['echo "{{{{ name }}}}" > /etc/mb-marker']}}]
exports: [{{type: qcow2}}]
builds: [{{name: one}}, {{name: two}}]
""")
    for jobs in ("1", "2"):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "baker", "build", "mb.yaml", "-j", jobs, "--force",
                               "--no-store", "--plain"], cwd=work, capture_output=True, text=True,
                              env=None)
        wall = time.monotonic() - start
        lines = proc.stdout.splitlines()
        table = "\n".join(lines[next((i for i, line in enumerate(lines) if " BUILD " in line), 0):])
        print(f"-j {jobs}: exit {proc.returncode}, wall {wall:.1f}s\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
