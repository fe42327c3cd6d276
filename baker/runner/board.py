"""What the runner shows while builds run: one lane per build, fed by its events.

Three outputs share the lanes: `TtyOut` keeps a block of status lines (one per build: step, elapsed,
download progress) at the bottom of the terminal with log lines scrolling above it; `PlainOut` writes
`TIMESTAMP NAME: text` lines with no escape codes; `JsonOut` passes every event through as one line
(each already carries its `build`). A `--log-file` gets the plain lines of every build, interleaved.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from baker.output import PLAIN_PROGRESS_EVERY, event_text, printable, progress_text
from baker.secrets import MASKER
from baker.units import human_duration


def now_ts() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Lane:
    """One build as the runner sees it: its state and the step it is in."""

    name: str
    state: str = "waiting"  # waiting | running | ok | skipped | failed | interrupted | not started
    step: str = ""
    index: int = 0
    total: int = 0
    step_started: float = 0.0
    started: float | None = None
    ended: float | None = None
    progress: str = ""
    failed_step: str | None = None
    exit_code: int | None = None
    output_dir: str | None = None
    failure_seen: bool = False
    last_progress_line: float = field(default=0.0, repr=False)

    def apply(self, record: dict[str, Any], now: float) -> None:
        kind = record.get("event")
        if kind == "step_start":
            self.step, self.index, self.total = record["step"], record["index"], record["total"]
            self.step_started, self.progress = now, ""
        elif kind == "step_done":
            self.progress = ""
        elif kind == "progress":
            self.progress = progress_text(record)
        elif kind == "build_skipped":
            self.output_dir = record.get("output_dir")
            self.state = "skipped"
        elif kind == "build_start" or kind == "build_done":
            self.output_dir = record.get("output_dir") or self.output_dir
        elif kind == "build_failed":
            self.failure_seen = True
            self.failed_step = record.get("step")

    def status(self, now: float, width: int) -> str:
        """The lane's line on a terminal."""
        head = f"{self.name:<{width}}  "
        if self.state == "waiting":
            return head + "waiting"
        if self.state == "running":
            if not self.step:
                return head + "starting"
            extra = f"  {self.progress}" if self.progress else ""
            return (head + f"[{self.index}/{self.total}] {self.step} "
                    f"{human_duration(now - self.step_started)}{extra}")
        took = human_duration((self.ended or now) - (self.started or now))
        if self.state == "ok":
            return head + f"done in {took}"
        if self.state == "skipped":
            return head + "up to date (nothing to do)"
        if self.state == "failed":
            where = f" at {self.failed_step}" if self.failed_step else ""
            return head + f"FAILED{where} after {took} (exit {self.exit_code})"
        return head + self.state


class Out:
    """The base output: lanes plus the optional --log-file (plain, every build, interleaved)."""

    def __init__(self, names: list[str], stream: TextIO, log_file: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lanes = {n: Lane(n) for n in names}
        self.stream = stream
        self.log_file = log_file
        self.clock = clock
        self.width = max((len(n) for n in names), default=0)
        self._lock = threading.RLock()

    def event(self, lane: str, record: dict[str, Any]) -> None:
        """One event of the build `lane` (the child's own record, `build` field included)."""
        with self._lock:
            ln = self.lanes[lane]
            ln.apply(record, self.clock())
            text = self._text(ln, record)
            text = printable(text) if text is not None else None
            if text is not None and self.log_file is not None:
                self.log_file.write(f"{record.get('ts') or now_ts()} {lane}: {text}\n")
                self.log_file.flush()
            self.show(ln, record, text)

    def _text(self, ln: Lane, record: dict[str, Any]) -> str | None:
        kind = str(record.get("event"))
        if kind == "progress":  # a line only every few seconds; the terminal shows it on the lane
            if self.clock() - ln.last_progress_line < PLAIN_PROGRESS_EVERY:
                return None
            ln.last_progress_line = self.clock()
        return event_text(kind, record)

    def show(self, ln: Lane, record: dict[str, Any], text: str | None) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        """A line of the runner's own (not of one build)."""
        with self._lock:
            text, ts = printable(MASKER.mask(text)), now_ts()
            if self.log_file is not None:
                self.log_file.writelines(f"{ts} {line}\n" for line in text.splitlines())
                self.log_file.flush()
            self.write_note(text)

    def write_note(self, text: str) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called a few times a second: a terminal redraws its clocks."""

    def redraw(self) -> None:
        """A lane changed state: a terminal shows it."""

    def close(self) -> None:
        """Leave the terminal clean."""


class PlainOut(Out):
    """Off a terminal: `TIMESTAMP NAME: text`, no escape codes."""

    def show(self, ln: Lane, record: dict[str, Any], text: str | None) -> None:
        if text is None:
            return
        ts = record.get("ts") or now_ts()
        for line in text.splitlines() or [""]:
            self.stream.write(f"{ts} {ln.name}: {line}\n")
        self.stream.flush()

    def write_note(self, text: str) -> None:
        ts = now_ts()
        self.stream.writelines(f"{ts} {line}\n" for line in text.splitlines())
        self.stream.flush()


class JsonOut(Out):
    """--json: every event of every build, one per line, as the build emitted it."""

    def show(self, ln: Lane, record: dict[str, Any], text: str | None) -> None:
        self.stream.write(json.dumps({**record, "build": record.get("build") or ln.name}) + "\n")
        self.stream.flush()

    def write_note(self, text: str) -> None:
        pass  # stdout carries events only; the summary goes to stderr


class TtyOut(Out):
    """A terminal: log lines scroll above a block of one status line per build, redrawn in place."""

    def __init__(self, *args: Any, columns: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.columns = columns
        self.height = 0  # lines of the status block currently on screen
        self.closed = False  # the block's last frame stays; what follows (the summary) goes below it

    def show(self, ln: Lane, record: dict[str, Any], text: str | None) -> None:
        kind = record.get("event")
        if text is None or kind in ("step_start", "progress"):
            self.redraw()  # the lane shows these
            return
        self._above([f"{ln.name}: {line}" for line in text.splitlines() or [""]])

    def write_note(self, text: str) -> None:
        self._above(text.splitlines() or [""])

    def _above(self, lines: list[str]) -> None:
        self._clear()
        for line in lines:
            self.stream.write(line + "\n")
        self._draw()

    def _clear(self) -> None:
        if self.height:
            self.stream.write(f"\x1b[{self.height}A\r\x1b[J")
            self.height = 0

    def _draw(self) -> None:
        if self.closed:
            self.stream.flush()
            return
        cols = self.columns or shutil.get_terminal_size((100, 24)).columns
        now = self.clock()
        lines = [ln.status(now, self.width)[: max(cols - 1, 10)] for ln in self.lanes.values()]
        for line in lines:
            self.stream.write("\x1b[2K" + line + "\n")
        self.height = len(lines)
        self.stream.flush()

    def redraw(self) -> None:
        with self._lock:
            self._clear()
            self._draw()

    def tick(self) -> None:
        self.redraw()

    def close(self) -> None:
        with self._lock:
            self.redraw()  # the final states stay on screen
            self.closed, self.height = True, 0


OUTPUTS: dict[str, type[Out]] = {"tty": TtyOut, "plain": PlainOut, "json": JsonOut}
