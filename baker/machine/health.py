"""Knowing the guest's run state at every moment, so a stopped guest is noticed in seconds.

A QEMU process can live on while its guest is gone: KVM emulation failures leave it in `internal-error`
spinning at 100 % CPU, a kernel panic (reported by the pvpanic device) leaves it `guest-panicked`, a
host disk that fills up pauses it in `io-error`. None of these end the process, so waiting on the
process alone waits for the whole ssh_timeout. The monitor here watches a second QMP connection of its
own (events plus `query-status` twice a second) and QEMU's stderr, and records the first reason the
guest is gone.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.fsutil import read_end

log = logging.getLogger("baker.machine")

#: how often the monitor asks QEMU for its run state; detection takes at most about twice this
POLL_SECONDS = 0.5

# QEMU's own words when KVM gives up on a guest (accel/kvm/kvm-all.c and target/i386/kvm/kvm.c)
_KVM_FAILURE = re.compile(
    r"KVM internal error|emulation failure|KVM: entry failed|kvm run failed|"
    r"KVM_EXIT_UNKNOWN|KVM: injection failed"
)

#: run states in which a guest will never answer again by itself, with what to tell the user
GONE_STATES: dict[str, str] = {
    "internal-error": "the accelerator stopped the guest (QEMU run state internal-error)",
    "guest-panicked": "the guest kernel panicked (pvpanic)",
    "io-error": "a disk I/O error paused the guest (QEMU run state io-error)",
    "shutdown": "the guest shut down",
    "paused": "the guest was paused unexpectedly",
    "suspended": "the guest suspended itself (ACPI S3) and will not answer",
    "watchdog": "the guest's watchdog fired and paused it",
    "debug": "the guest stopped at a debugger breakpoint",
}

_HINTS: dict[str, str] = {
    "internal-error": "KVM cannot run this guest on this host; use accelerator: auto (falls back to "
                      "TCG) or tcg",
    "guest-panicked": "see the serial console tail for the panic message",
    "io-error": "the host could not write the build disk; check free space where the work dir lives "
                "(TMPDIR)",
    "paused": "something sent QMP 'stop' to this VM, or the host paused it",
}


@dataclass(frozen=True)
class Gone:
    """Why the guest will not answer again: a short reason, a state name, and what to do."""

    reason: str
    state: str
    hint: str | None = None
    kvm_failure: bool = False  # the accelerator itself failed: under `auto`, TCG may do better

    def __str__(self) -> str:
        return self.reason


def kvm_failure_in(stderr_text: str) -> str | None:
    """The lines of QEMU's stderr that say KVM failed (at most two, joined), if any."""
    found = [line.strip() for line in stderr_text.splitlines() if _KVM_FAILURE.search(line)]
    return "; ".join(dict.fromkeys(found[:2])) or None


def classify_status(status: str, *, detail: str = "") -> Gone | None:
    """A `query-status` run state → Gone, or None while the guest can still make progress."""
    if status not in GONE_STATES:
        return None  # running, prelaunch, inmigrate, postmigrate, save-vm, restore-vm, ...
    reason = GONE_STATES[status] + (f": {detail}" if detail else "")
    return Gone(reason, status, _HINTS.get(status), kvm_failure=status == "internal-error")


def describe_event(event: dict[str, Any]) -> str:
    """One line for an event in the log and, for the fatal ones, in the reason."""
    name = str(event.get("event", "?"))
    data = event.get("data") or {}
    if name == "BLOCK_IO_ERROR":
        nospace = " (no space left on the host)" if data.get("nospace") else ""
        return (f"{data.get('device') or data.get('node-name') or 'disk'} {data.get('operation', 'I/O')} "
                f"error: {data.get('reason', 'unknown')}{nospace}")
    if name == "GUEST_PANICKED":
        info = data.get("info") or {}
        return "guest kernel panic" + (f" ({info})" if info else "")
    if name in ("SHUTDOWN", "RESET"):
        return f"{name.lower()} ({data.get('reason', 'unknown reason')})"
    return name.lower()


@dataclass
class HealthMonitor:
    """Watches one QEMU's run state from a thread of its own; `gone` is set once and never cleared.

    `connect` opens a fresh QMP connection (the monitor's own socket, so it never waits behind a
    provisioner's or the boot typist's commands on the main one). `on_gone` callbacks run once, in the
    monitor's thread, when the guest is found gone (e.g. to record a broken KVM for this host).
    """

    connect: Callable[[], Any]
    stderr_log: Path
    is_running: Callable[[], bool]
    poll: float = POLL_SECONDS
    on_gone: list[Callable[[Gone], None]] = field(default_factory=list)
    gone: Gone | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _expected_exit: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stderr_seen: int = 0
    _last_io_error: str = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="baker-qemu-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def expect_exit(self) -> None:
        """The guest is about to power off on purpose: a SHUTDOWN from now on is not a failure."""
        self._expected_exit = True

    def check_now(self) -> Gone | None:
        """The stderr check alone, cheap enough for every `alive()` call between two polls."""
        if self.gone is None:
            self._check_stderr()
        return self.gone

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        mon = None
        try:
            while not self._stop.is_set() and self.gone is None:
                if mon is None:
                    try:
                        mon = self.connect()
                    except Exception as e:  # QEMU is going away; the process check reports that
                        log.debug("health monitor cannot connect: %s", e)
                        if not self.is_running():
                            return
                        self._stop.wait(self.poll)
                        continue
                try:
                    self._tick(mon)
                except Exception as e:
                    log.debug("health monitor lost QMP: %s", e)
                    with contextlib.suppress(Exception):
                        mon.close()
                    mon = None
                    if not self.is_running():
                        return
                    self._stop.wait(self.poll)
        finally:
            if mon is not None:
                with contextlib.suppress(Exception):
                    mon.close()

    def _tick(self, mon: Any) -> None:
        started = time.monotonic()
        for event in mon.get_events(wait=False):
            self._on_event(event)
        self._check_stderr()
        if self.gone is None:
            status = mon.cmd("query-status")
            state = str(status.get("status", "")) if isinstance(status, dict) else ""
            if state == "shutdown" and self._expected_exit:
                return
            detail = self._last_io_error if state == "io-error" else ""
            if (g := classify_status(state, detail=detail)) is not None:
                if state == "internal-error" and (line := kvm_failure_in(read_end(self.stderr_log))):
                    g = Gone(f"{g.reason}: {line}", g.state, g.hint, kvm_failure=True)
                self._set(g)
                return
        left = self.poll - (time.monotonic() - started)
        if left > 0:
            with contextlib.suppress(Exception):  # wait for the next event, at most one poll
                for event in mon.get_events(wait=left):
                    self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        name = event.get("event")
        if name in ("RESUME", "POWERDOWN", "NIC_RX_FILTER_CHANGED", "RTC_CHANGE"):
            return
        text = describe_event(event)
        expected = name in ("SHUTDOWN", "STOP") and self._expected_exit
        (log.debug if expected else log.info)("QEMU event: %s", text)
        if name == "BLOCK_IO_ERROR":
            self._last_io_error = text
        elif name == "GUEST_PANICKED":
            self._set(Gone(f"{GONE_STATES['guest-panicked']}: {text}", "guest-panicked",
                           _HINTS["guest-panicked"]))
        elif name == "SHUTDOWN" and not self._expected_exit:
            data = event.get("data") or {}
            reason = str(data.get("reason", ""))
            if reason == "guest-panic":
                self._set(Gone(GONE_STATES["guest-panicked"], "guest-panicked", _HINTS["guest-panicked"]))
            elif data.get("guest", True):
                self._set(Gone(f"the guest powered itself off unexpectedly ({reason or 'no reason given'})",
                               "shutdown", "a provisioner or the guest's own services shut it down; use "
                               "expect_disconnect: true for a provisioner that reboots"))

    def _check_stderr(self) -> None:
        try:
            size = self.stderr_log.stat().st_size
        except OSError:
            return
        if size == self._stderr_seen:
            return
        self._stderr_seen = size
        if (line := kvm_failure_in(read_end(self.stderr_log))) is not None:
            self._set(Gone(f"KVM failed to run the guest: {line}", "internal-error",
                           _HINTS["internal-error"], kvm_failure=True))

    def _set(self, g: Gone) -> None:
        if self.gone is not None:
            return
        self.gone = g
        log.info("guest stopped: %s", g.reason)  # the step that notices it reports it once
        for cb in list(self.on_gone):
            try:
                cb(g)
            except Exception as e:  # a callback must not hide the failure itself
                log.debug("on_gone callback failed: %s", e)
