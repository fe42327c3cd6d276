"""Runs several builds at once, each as a child `baker build ... --json` in its own process group.

A child has its own everything (ports, work dir, logs, VM, signal handlers, secret masker, logging),
so one failing or hanging build cannot touch another, and the single-build code path is the one that
runs. The runner reads each child's events line by line, shows them (board.py), passes SIGINT/SIGTERM
on to every child (which unwinds as a single build does), and ends with a summary table.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from baker.fsutil import atomic_write, remove
from baker.proc import spawn
from baker.runner.board import OUTPUTS, Out, now_ts
from baker.runner.plan import Planned
from baker.runner.summary import Result, exit_code, output_size, table


@dataclass
class Child:
    planned: Planned
    proc: subprocess.Popen[bytes]
    started: float
    deps_part: Path | None
    open_streams: int = 2  # stdout and stderr readers still reading
    codes: list[int] = field(default_factory=list)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the runner dies without passing a signal on."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _read(name: str, stream: IO[bytes], events: queue.Queue[tuple[str, dict[str, Any] | None]],
          is_json: bool) -> None:
    """One child's stdout (JSON events) or stderr (text): each line becomes an event on the queue."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        record: dict[str, Any] | None = None
        if is_json and line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
        if not isinstance(record, dict) or "event" not in record:
            if not line.strip():
                continue
            record = {"ts": now_ts(), "event": "log", "build": name,
                      "message": line if is_json else f"stderr: {line}"}
        events.put((name, record))
    events.put((name, None))


class Runner:
    def __init__(self, planned: Sequence[Planned], child_argv: Callable[[Planned, Path | None], list[str]], *,
                 jobs: int, mode: str, stream: TextIO | None = None, log_file: TextIO | None = None,
                 deps_file: Path | None = None) -> None:
        self.planned = list(planned)
        self.child_argv = child_argv
        self.jobs = max(1, jobs)
        self.out: Out = OUTPUTS[mode]([p.name for p in self.planned], stream or sys.stdout, log_file)
        self.mode = mode
        self.deps_file = deps_file
        self.events: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        self.running: dict[str, Child] = {}
        self.results: dict[str, Result] = {}
        self.signum = 0
        self.signals = 0

    # -- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        """Pass it on to every running build (each cleans up as on its own); start no new one."""
        self.signum = self.signum or signum
        self.signals += 1
        for child in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signum)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> int:
        parts = Path(tempfile.mkdtemp(prefix="baker-deps-")) if self.deps_file else None
        in_main = threading.current_thread() is threading.main_thread()
        caught = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        old = {s: signal.signal(s, self._on_signal) for s in caught}
        pending = deque(self.planned)
        self.out.note(f"{len(self.planned)} builds, {min(self.jobs, len(self.planned))} at a time: "
                      + ", ".join(p.name for p in self.planned))
        try:
            while pending or self.running:
                while pending and len(self.running) < self.jobs and not self.signum:
                    self._start(pending.popleft(), parts)
                if self.signum and pending:
                    for p in pending:
                        self.results[p.name] = Result(p.name, "not started", 0.0, 0, 128 + self.signum)
                        self.out.lanes[p.name].state = "not started"
                    pending.clear()
                try:
                    name, record = self.events.get(timeout=0.25)
                except queue.Empty:
                    self.out.tick()
                    continue
                child = self.running[name]
                if record is None:
                    child.open_streams -= 1
                    if child.open_streams == 0:
                        self._finish(child)
                else:
                    self.out.event(name, record)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.out.close()
        results = [self.results[p.name] for p in self.planned]
        if parts is not None and self.deps_file is not None:
            self._write_deps(parts)
        summary = table(results)
        if self.mode == "json":
            print(summary, file=sys.stderr)
        else:
            self.out.note(summary)
        return exit_code(results, self.signum)

    def _start(self, p: Planned, parts: Path | None) -> None:
        part = parts / f"{p.name}.d" if parts is not None else None
        proc = spawn(self.child_argv(p, part), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     start_new_session=True, preexec_fn=_die_with_parent)
        child = Child(p, proc, time.monotonic(), part)
        self.running[p.name] = child
        lane = self.out.lanes[p.name]
        lane.state, lane.started = "running", child.started
        for stream, is_json in ((proc.stdout, True), (proc.stderr, False)):
            assert stream is not None
            threading.Thread(target=_read, args=(p.name, stream, self.events, is_json), daemon=True).start()

    def _finish(self, child: Child) -> None:
        """Both streams closed: reap the child and record its result."""
        code = child.proc.wait()
        name = child.planned.name
        del self.running[name]
        lane = self.out.lanes[name]
        lane.ended, lane.exit_code = time.monotonic(), code
        if code == 0:
            lane.state = "skipped" if lane.state == "skipped" else "ok"
        else:
            lane.state = "interrupted" if self.signum and code == 128 + self.signum else "failed"
            if not lane.failure_seen:  # it died before it could say why (killed, crashed): say it for it
                self.out.event(name, {"ts": now_ts(), "event": "build_failed", "build": name, "step": None,
                                      "message": f"baker build exited with code {code} without a report",
                                      "tails": {}, "logs": None, "exit_code": code, "debug": None})
        ok = lane.state in ("ok", "skipped")
        self.results[name] = Result(name, lane.state, lane.ended - child.started,
                                    output_size(lane.output_dir) if ok else 0, code, lane.failed_step)
        self.out.redraw()

    def _write_deps(self, parts: Path) -> None:
        """--deps-file with several builds: one file holding every good build's rule."""
        assert self.deps_file is not None
        text = "".join(p.read_text() for p in sorted(parts.glob("*.d")))
        if text:
            self.deps_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.deps_file, text)
        remove(parts)
