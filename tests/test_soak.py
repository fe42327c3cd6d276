"""Soak: consecutive builds in one process leak nothing (QEMU, ports, fds, threads, temp dirs, disk).

Slow (about a minute per build under TCG): `make test-slow`. BAKER_SOAK_BUILDS sets the count (10).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from baker.build import run_build
from baker.output import Reporter
from baker.state import BuildOptions
from baker.template import load_template

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def _listening_ports() -> set[str]:
    """Listening sockets this process owns (other builds on the host may come and go meanwhile)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={os.getpid()}," in line}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def test_ten_builds_leak_nothing(tmp_path: Path, base_image: Path):
    n = int(os.environ.get("BAKER_SOAK_BUILDS", "10"))
    t_path = tmp_path / "soak.yaml"
    t_path.write_text(f"""name: soak
source:
  cloud_image: {{url: '{base_image}', checksum: none}}
  cloud_init:
    user_data:
      power_state: {{mode: poweroff, delay: now, condition: true}}
machine: {{accelerator: auto, cpus: 2, memory: 768, disk_size: 3G}}
communicator: {{type: none}}
shutdown: {{timeout: 10m}}
exports: [{{type: qcow2}}]
""")
    out = tmp_path / "out"
    cache = Path(os.environ["BAKER_CACHE_DIR"])
    tmp_root = Path(tempfile.gettempdir())

    def snapshot() -> dict:
        return {"fds": _fds(), "threads": threading.active_count(), "ports": _listening_ports(),
                "tmp": {p.name for pat in ("baker-soak-*", "baker-log-soak-*") for p in tmp_root.glob(pat)}}

    before = None
    seconds = []
    for i in range(n):
        t = load_template(t_path)
        outcome = run_build(t, BuildOptions(output_dir=out), Reporter("plain", io.StringIO()))
        assert outcome.ok, f"build {i + 1} failed: {outcome.error}"
        seconds.append(sum(x.seconds for x in outcome.timings))
        if before is None:
            before = snapshot()  # after the first build: caches and lazy imports are warm
    after = snapshot()
    assert not subprocess.run(["pgrep", "-f", "process=baker-soak"], capture_output=True).stdout
    assert after["fds"] - before["fds"] == set(), "file descriptors leaked"
    assert after["threads"] <= before["threads"], "threads leaked"
    assert after["ports"] - before["ports"] == set(), "listening ports leaked"
    assert after["tmp"] - before["tmp"] == set(), "temp dirs leaked"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")] == []
    artifacts = _du(out)
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "build.log", "manifest.json",
                                                     "serial.log", "soak.qcow2"]
    # disk use: the download cache holds nothing for a local base; logs of failures only
    assert _du(cache / "downloads") < 1 << 20
    print(f"\nsoak: {n} builds, {min(seconds):.0f}-{max(seconds):.0f}s each, artifacts {artifacts >> 20} MiB")
    shutil.rmtree(out)
