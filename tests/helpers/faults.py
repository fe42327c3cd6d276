"""Helpers for fault injection: write a template, run `baker build` as a real process, watch it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from baker.events import event_problems
from tests.helpers.paths import ROOT


@dataclass
class Run:
    rc: int
    events: list[dict]
    stdout: str
    stderr: str
    out: Path
    seconds: float
    work_dirs: list[str] = field(default_factory=list)

    @property
    def failure(self) -> dict:
        return next((e for e in self.events if e["event"] == "build_failed"), {})

    def steps_started(self) -> list[str]:
        return [e["step"] for e in self.events if e["event"] == "step_start"]


def write_template(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def start_build(template: Path, out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "baker", "build", str(template), "--output-dir", str(out), "--json",
         "--verbose", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _result(proc: subprocess.Popen, stdout: str, stderr: str, out: Path, started: float) -> Run:
    """Parse the --json event stream; the work dir comes from the debug line PrepareDirs logs."""
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    drift = [p for e in events for p in event_problems(e)]
    assert not drift, f"--json events do not match docs/events.md: {drift}"
    work = [m.split("work dir ", 1)[1].split(",")[0] for e in events if e["event"] == "log"
            for m in [e.get("message", "")] if "work dir " in m]
    return Run(proc.returncode, events, stdout, stderr, out, time.monotonic() - started, work)


def finish(proc: subprocess.Popen, out: Path, started: float, timeout: float = 1200) -> Run:
    stdout, stderr = proc.communicate(timeout=timeout)
    return _result(proc, stdout, stderr, out, started)


def build(template: Path, out: Path, *args: str, env: dict | None = None, timeout: float = 1200) -> Run:
    started = time.monotonic()
    return finish(start_build(template, out, *args, env=env), out, started, timeout)


def signal_at(template: Path, out: Path, step_prefix: str, sig: int, *args: str, delay: float = 0.0,
              env: dict | None = None) -> Run:
    """Send `sig` once the build announces a step whose name starts with step_prefix."""
    started = time.monotonic()
    proc = start_build(template, out, *args, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("{"):
            ev = json.loads(line)
            if ev["event"] == "step_start" and ev["step"].startswith(step_prefix):
                time.sleep(delay)
                os.kill(proc.pid, sig)
                break
    rest, stderr = proc.communicate(timeout=300)
    return _result(proc, "".join(lines) + rest, stderr, out, started)


def qemu_pids_for(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"process=baker-{name}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def assert_nothing_left(run: Run, name: str) -> None:
    """The invariants every failed build must keep."""
    assert not qemu_pids_for(name), "QEMU outlived the build"
    assert not run.out.exists() or not any(p.suffix in (".qcow2", ".part") for p in run.out.iterdir())
    leftovers = [p for p in run.out.parent.glob(f".{run.out.name}.staging-*")]
    assert not leftovers, f"staging dirs left: {leftovers}"
    for w in run.work_dirs:
        assert not Path(w).exists(), f"work dir left: {w}"


SIG = signal
