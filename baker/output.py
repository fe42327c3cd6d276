"""What people and machines see: live progress on a terminal, timestamped lines off it, --json events.

Everything passes through the secret masker. The full debug log always goes to build.log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from baker.secrets import MASKER, MaskingFilter
from baker.units import human_duration, human_size

# a guest's console and a provisioner's output bring their own colours and cursor moves: human output
# (a terminal's status block, plain logs, --log-file) shows their text only
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` without ANSI escape sequences and control characters (newlines and tabs stay)."""
    return _CONTROL.sub("", text)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(kw_only=True)
class Failure:
    """What a failed build reports, whatever the output mode: the formatters below decide how."""

    step: str | None
    message: str
    tails: dict[str, str] = field(default_factory=dict)
    logs: str | None = None
    exit_code: int
    debug: dict[str, str] | None = None  # how to reach the VM --on-error=abort keeps running


def _failure_event(f: Failure) -> tuple[str, dict[str, Any]]:
    """--json: one build_failed event with every field, for CI to read."""
    return "build_failed", dataclasses.asdict(f)


def _failure_text(f: Failure) -> tuple[str, dict[str, Any]]:
    """Terminal and plain logs: the message, the tails a step left, where the logs and the VM are."""
    lines = [f"build failed: {f.message}"]
    for title, text in f.tails.items():
        lines.append(f"--- {title} ---")
        lines += [f"  {line}" for line in text.splitlines()]
    if f.logs:
        lines.append(f"logs kept in {f.logs}")
    if f.debug:
        lines.append("--on-error=abort: the VM is still running. Connect with:")
        lines.append(f"  {f.debug['ssh']}")
        lines.append(f"  serial console: {f.debug['serial_log']}   work dir: {f.debug['work_dir']}")
    return "error", {"message": "\n".join(lines)}


FAILURE_FORMATTERS: dict[str, Callable[[Failure], tuple[str, dict[str, Any]]]] = {
    "json": _failure_event, "tty": _failure_text, "plain": _failure_text,
}


def progress_text(fields: dict[str, Any]) -> str:
    """`downloading: 120.0 MiB of 600.0 MiB (20%), 10.0 MiB/s, ETA 48.0s` from a progress event."""
    done, total = fields.get("done") or 0, fields.get("total")
    text = f"{fields.get('what', 'progress')}: {human_size(done)}"
    if total:
        text += f" of {human_size(total)} ({done * 100 // total}%)"
    if fields.get("rate"):
        text += f", {human_size(fields['rate'])}/s"
    if fields.get("eta") is not None:
        text += f", ETA {human_duration(fields['eta'])}"
    return text


def event_text(kind: str, fields: dict[str, Any]) -> str | None:
    """The human line of an event (None: not a line), shared by the reporter and the multi-build runner."""
    if kind == "step_start":
        return f"[{fields['index']}/{fields['total']}] {fields['step']} ..."
    if kind == "step_done":
        took = human_duration(fields["seconds"])
        return f"[{fields['index']}/{fields['total']}] {fields['step']} done in {took}"
    if kind in ("warning", "error", "info", "log"):
        prefix = {"warning": "WARNING: ", "error": "ERROR: "}.get(kind, "")
        return prefix + str(fields.get("message", ""))
    if kind == "artifact":
        return f"  artifact {fields['path']} ({fields.get('size_human', '')})"
    if kind == "build_skipped":
        return f"build '{fields['name']}' {fields['reason']}"
    if kind == "build_reason":
        return str(fields["reason"])
    if kind == "build_done":
        took = human_duration(fields["seconds"])
        return f"build '{fields['name']}' finished in {took}: {fields['output_dir']}"
    if kind == "build_failed":
        known = {f.name for f in dataclasses.fields(Failure)}
        f = Failure(**{k: v for k, v in fields.items() if k in known})
        return "ERROR: " + str(_failure_text(f)[1]["message"])
    if kind == "progress":
        return progress_text(fields)
    return None


PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines off a terminal (each is a whole line)


class Reporter:
    """Turns pipeline events into output. mode: "tty" | "plain" | "json".

    Every event carries `build`, the name of the build it belongs to (set by `building`), so a
    consumer of several builds' streams can tell them apart. `log_file` gets the plain lines too.
    """

    def __init__(self, mode: str | None = None, stream: TextIO | None = None, *, build: str = "",
                 log_file: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if mode is None:
            mode = "tty" if self.stream.isatty() else "plain"
        self.mode = mode
        self.build = build
        self.log_file = log_file
        # re-entrant: a signal handler that logs can interrupt a write holding it (SIGTERM mid-line)
        self._lock = threading.RLock()
        self._current: tuple[str, int, int, float] | None = None
        self._progress = ""  # the current step's latest progress, shown on the status line
        self._last_progress_line = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.events: list[dict[str, Any]] = []

    def building(self, name: str) -> Any:
        """Tag events with `name` while a build (maybe a layer's parent) runs; restore after."""
        import contextlib

        @contextlib.contextmanager
        def scope() -> Any:
            before, self.build = self.build, name
            try:
                yield
            finally:
                self.build = before

        return scope()

    # -- events ---------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        fields = MASKER.mask_obj(fields)
        record = {"ts": _now(), "event": kind, "build": self.build, **fields}
        self.events.append(record)
        if kind == "progress":
            self._on_progress(record, fields)
            return
        text = event_text(kind, fields) if kind != "log" else None
        if self.mode == "json":
            with self._lock:
                self.stream.write(json.dumps(record, default=str) + "\n")
                self.stream.flush()
                if text is not None:
                    self._file_line(text, record["ts"])
            return
        if kind == "step_start":
            self._current = (fields["step"], fields["index"], fields["total"], time.monotonic())
            self._progress = ""
            if self.mode == "tty":
                self._start_ticker()
                self._file_line(text or "")
                return
        elif kind == "step_done":
            self._current = None
            self._progress = ""
        if text is not None:
            self._line(text)

    def _on_progress(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        """tty: the status line shows it; plain/log file: a line every few seconds; json: every event."""
        text = progress_text(fields)
        with self._lock:
            if self.mode == "json":
                self.stream.write(json.dumps(record, default=str) + "\n")
                self.stream.flush()
            self._progress = text
            now = time.monotonic()
            if now - self._last_progress_line < PLAIN_PROGRESS_EVERY and not fields.get("final"):
                return
            self._last_progress_line = now
            if self.mode == "plain":
                self._line(text)
            else:
                self._file_line(text)

    def failure(self, f: Failure) -> None:
        """Report a failed build in this reporter's mode (see FAILURE_FORMATTERS)."""
        kind, fields = FAILURE_FORMATTERS[self.mode](f)
        self.event(kind, **fields)

    def log_line(self, text: str) -> None:
        """Human log lines (provisioner output etc.) shown live; JSON mode sends them as events."""
        if self.mode == "json":
            self.event("log", message=text)
            self._file_line(MASKER.mask(text))
        else:
            self._line(MASKER.mask(text))

    def _file_line(self, text: str, ts: str | None = None) -> None:
        if self.log_file is not None:
            with self._lock:
                self.log_file.write(f"{ts or _now()} {printable(text)}\n")
                self.log_file.flush()

    def _line(self, text: str) -> None:
        with self._lock:
            ts, text = _now(), printable(text)
            if self.mode == "tty":
                self.stream.write("\r\x1b[2K" + text + "\n")
                self._draw_status()
            else:
                self.stream.write(f"{ts} {text}\n")
            self.stream.flush()
            self._file_line(text, ts)

    # -- terminal status line -------------------------------------------------------------------
    def _draw_status(self) -> None:
        if self._current is None:
            return
        name, index, total, start = self._current
        spin = "|/-\\"[int(time.monotonic() * 4) % 4]
        elapsed = human_duration(time.monotonic() - start)
        extra = f"  {self._progress}" if self._progress else ""
        self.stream.write(f"\r\x1b[2K{spin} [{index}/{total}] {name} {elapsed}{extra}")

    def _start_ticker(self) -> None:
        if self._ticker and self._ticker.is_alive():
            return
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(0.25):
                with self._lock:
                    self._draw_status()
                    self.stream.flush()

        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker:
            self._ticker.join(1)
        if self.mode == "tty":
            with self._lock:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()


class ReporterHandler(logging.Handler):
    """Routes INFO+ log records from baker's loggers to the reporter (live lines or JSON events)."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter
        self.addFilter(MaskingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            progress = getattr(record, "progress", None)
            if isinstance(progress, dict):  # a step's structured progress (download bytes, rate, ETA)
                self.reporter.event("progress", **progress)
            elif record.levelno >= logging.WARNING:
                self.reporter.event("warning" if record.levelno == logging.WARNING else "error", message=msg)
            else:
                self.reporter.log_line(msg)
        except Exception:  # logging must never break a build
            self.handleError(record)


def setup_logging(reporter: Reporter, build_log: Path | None, verbose: bool = False) -> list[logging.Handler]:
    """Debug-level file log plus INFO to the reporter. Returns the handlers so callers can detach them."""
    root = logging.getLogger("baker")
    root.setLevel(logging.DEBUG)
    handlers: list[logging.Handler] = []
    rh = ReporterHandler(reporter)
    rh.setLevel(logging.DEBUG if verbose else logging.INFO)
    handlers.append(rh)
    if build_log is not None:
        build_log.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(build_log)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        fh.addFilter(MaskingFilter())
        handlers.append(fh)
    for h in handlers:
        root.addHandler(h)
    # paramiko logs every refused handshake while the guest boots as an ERROR with a traceback;
    # the communicator reports what matters itself
    # asyncio: qemu.qmp's pending reads end with "Task exception was never retrieved" when QEMU quits
    for noisy in ("paramiko", "qemu.qmp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    return handlers


def teardown_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger("baker")
    for h in handlers:
        root.removeHandler(h)
        h.close()
