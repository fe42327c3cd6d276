"""What people and machines see: live progress on a terminal, timestamped lines off it, --json events.

Everything passes through the secret masker. The full debug log always goes to build.log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from baker.secrets import MASKER, MaskingFilter
from baker.units import human_duration


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


class Reporter:
    """Turns pipeline events into output. mode: "tty" | "plain" | "json"."""

    def __init__(self, mode: str | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if mode is None:
            mode = "tty" if self.stream.isatty() else "plain"
        self.mode = mode
        # re-entrant: a signal handler that logs can interrupt a write holding it (SIGTERM mid-line)
        self._lock = threading.RLock()
        self._current: tuple[str, int, int, float] | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.events: list[dict[str, Any]] = []

    # -- events ---------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        fields = MASKER.mask_obj(fields)
        record = {"ts": _now(), "event": kind, **fields}
        self.events.append(record)
        if self.mode == "json":
            with self._lock:
                self.stream.write(json.dumps(record, default=str) + "\n")
                self.stream.flush()
            return
        if kind == "step_start":
            self._current = (fields["step"], fields["index"], fields["total"], time.monotonic())
            if self.mode == "tty":
                self._start_ticker()
            else:
                self._line(f"[{fields['index']}/{fields['total']}] {fields['step']} ...")
        elif kind == "step_done":
            self._current = None
            self._line(f"[{fields['index']}/{fields['total']}] {fields['step']} done in "
                       f"{human_duration(fields['seconds'])}")
        elif kind in ("warning", "error", "info"):
            self._line(("WARNING: " if kind == "warning" else "ERROR: " if kind == "error" else "")
                       + str(fields.get("message", "")))
        elif kind == "artifact":
            self._line(f"  artifact {fields['path']} ({fields.get('size_human', '')})")
        elif kind == "build_skipped":
            self._line(f"build '{fields['name']}' {fields['reason']}")
        elif kind == "build_reason":
            self._line(str(fields["reason"]))
        elif kind == "build_done":
            self._line(f"build '{fields['name']}' finished in {human_duration(fields['seconds'])}: "
                       f"{fields['output_dir']}")

    def failure(self, f: Failure) -> None:
        """Report a failed build in this reporter's mode (see FAILURE_FORMATTERS)."""
        kind, fields = FAILURE_FORMATTERS[self.mode](f)
        self.event(kind, **fields)

    def log_line(self, text: str) -> None:
        """Human log lines (provisioner output etc.) shown live; JSON mode sends them as events."""
        if self.mode == "json":
            self.event("log", message=text)
        else:
            self._line(MASKER.mask(text))

    def _line(self, text: str) -> None:
        with self._lock:
            if self.mode == "tty":
                self.stream.write("\r\x1b[2K" + text + "\n")
                self._draw_status()
            else:
                self.stream.write(f"{_now()} {text}\n")
            self.stream.flush()

    # -- terminal status line -------------------------------------------------------------------
    def _draw_status(self) -> None:
        if self._current is None:
            return
        name, index, total, start = self._current
        spin = "|/-\\"[int(time.monotonic() * 4) % 4]
        elapsed = human_duration(time.monotonic() - start)
        self.stream.write(f"\r\x1b[2K{spin} [{index}/{total}] {name} {elapsed}")

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
            if record.levelno >= logging.WARNING:
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
