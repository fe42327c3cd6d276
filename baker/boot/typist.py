"""Type parsed boot_command actions into a running VM over QMP `input-send-event`.

Each key down/up is its own event followed by `key_interval`: installers drop keys that arrive
faster than they poll the keyboard (Packer issues #2156, #6247). `cancel` is checked between
events, so Ctrl-C stops typing at once instead of after the whole command (Packer #5947).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from baker.boot.keys import Action, KeyDown, KeyUp, Press, Wait, WaitFor, describe
from baker.errors import BakerError

log = logging.getLogger("baker.boot")

Execute = Callable[[str, dict[str, Any] | None], Any]

# CSI (colours, cursor moves), OSC (titles), charset switches (line drawing), other 2-byte escapes
_ANSI_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+][0-9A-Za-z]|[=>@-Z\\-_])"
)


_KEEP_CHARS = 64 * 1024  # serial text kept behind the search cursor, for error tails


class BootCommandCancelled(BakerError):
    """Typing stopped because the build was cancelled (the caller decides the exit code)."""


class WaitForTimeout(BakerError):
    """`<waitFor "text">` did not see its text; carries the serial tail so the user sees why."""

    def __init__(self, text: str, timeout: float, tail: list[str]):
        self.text = text
        self.timeout = timeout
        self.tail = tail
        shown = "\n".join("  | " + line for line in tail) if tail else "  (serial console is empty)"
        super().__init__(
            f'boot_command: <waitFor "{text}"> timed out after {timeout:g}s; last serial lines:\n{shown}',
            hint="check that the guest writes to the serial console (console=ttyS0) and the text is exact",
        )


def clean_console(text: str) -> str:
    """Serial text as a human reads it: escape sequences and carriage returns removed."""
    return _ANSI_RE.sub("", text).replace("\r", "")


class SerialWatcher:
    """Incrementally reads a serial log; finds text after the previous match.

    Starts at the beginning of the file so a prompt printed during boot_wait still counts.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._done = ""  # cleaned text of complete lines
        self._partial = b""  # bytes after the last newline (a prompt often has no newline)
        self._cursor = 0  # index in the cleaned text after the last match

    def _text(self) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                new = f.read()
        except FileNotFoundError:
            new = b""
        self._offset += len(new)
        data = self._partial + new
        cut = data.rfind(b"\n") + 1
        if cut:
            self._done += clean_console(data[:cut].decode("utf-8", errors="replace"))
        self._partial = data[cut:]
        return self._done + clean_console(self._partial.decode("utf-8", errors="replace"))

    def find(self, needle: str) -> bool:
        """True (and move past it) if `needle` appeared since the last match."""
        text = self._text()
        pos = text.find(needle, self._cursor)
        if pos < 0:
            # a later match of this needle can only start in the last len(needle)-1 characters
            self._cursor = max(self._cursor, len(text) - len(needle) + 1)
        else:
            self._cursor = pos + len(needle)
        # text before the cursor is never searched again; keep only enough for tail()
        drop = min(self._cursor, len(self._done) - _KEEP_CHARS)
        if drop > 0:
            self._done = self._done[drop:]
            self._cursor -= drop
        return pos >= 0

    def tail(self, lines: int = 20) -> list[str]:
        return [line for line in self._text().splitlines() if line.strip()][-lines:]


def _key_event(key: str, down: bool) -> dict[str, Any]:
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": key}}}


def _send(execute: Execute, events: list[dict[str, Any]]) -> None:
    reply = execute("input-send-event", {"events": events})
    # QEMUMonitorProtocol.cmd() returns the raw reply; other clients raise on errors themselves
    if isinstance(reply, dict) and "error" in reply:
        err = reply["error"]
        raise BakerError(f"QMP input-send-event failed: {err.get('desc', err)}")


def type_boot_command(
    actions: Sequence[Action],
    execute: Execute,
    *,
    key_interval: float,
    serial_log: Path,
    cancel: threading.Event | None = None,
    alive: Callable[[], str | None] | None = None,
    poll_interval: float = 0.25,
) -> None:
    """Type `actions` through `execute("input-send-event", {...})`; returns when all are sent.

    Raises WaitForTimeout with the serial tail, BootCommandCancelled when `cancel` is set.
    `alive()` (e.g. Machine.alive) returns None while the VM runs, else why it stopped; a dead VM
    ends a <waitFor> at once instead of after its timeout.
    Keys held with <xOn> (or mid-press on error) are released before returning or raising.
    """
    cancel = cancel or threading.Event()
    watcher = SerialWatcher(serial_log)
    held: list[str] = []

    def pause(seconds: float) -> None:
        if cancel.wait(seconds) if seconds > 0 else cancel.is_set():
            raise BootCommandCancelled("boot_command cancelled")

    def down(key: str) -> None:
        pause(0)
        _send(execute, [_key_event(key, True)])
        held.append(key)
        pause(key_interval)

    def up(key: str) -> None:
        _send(execute, [_key_event(key, False)])
        if key in held:
            held.remove(key)
        pause(key_interval)

    log.info("typing boot_command: %s", describe(actions))
    started = time.monotonic()
    try:
        for action in actions:
            match action:
                case Press(keys=keys):
                    for k in keys:
                        down(k)
                    for k in reversed(keys):
                        up(k)
                case KeyDown(key=k):
                    down(k)
                case KeyUp(key=k):
                    up(k)
                case Wait(seconds=s):
                    pause(s)
                case WaitFor(text=text, timeout=timeout):
                    log.info('waiting up to %gs for "%s" on the serial console', timeout, text)
                    deadline = time.monotonic() + timeout
                    while not watcher.find(text):
                        if alive is not None and (why := alive()) is not None:
                            raise BakerError(f'boot_command: VM stopped while waiting for "{text}": {why}')
                        if time.monotonic() >= deadline:
                            raise WaitForTimeout(text, timeout, watcher.tail(20))
                        pause(min(poll_interval, max(0.0, deadline - time.monotonic())))
                    log.info('saw "%s" after %.1fs of typing', text, time.monotonic() - started)
    finally:
        for k in reversed(held):  # never leave shift/ctrl stuck in the guest
            try:
                _send(execute, [_key_event(k, False)])
            except Exception as e:  # the VM may be gone; the original error matters more
                log.debug("could not release %s: %s", k, e)
    log.info("boot_command typed in %.1fs", time.monotonic() - started)
