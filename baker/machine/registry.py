"""Every QEMU baker started and has not yet reaped: the one list a forced exit must kill.

It lives with the machine layer because only the machine layer starts QEMU; the pipeline's signal
handling calls `kill_all` on a second signal without knowing what it kills.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

_pids: set[int] = set()
_lock = threading.Lock()


def register(pid: int) -> None:
    with _lock:
        _pids.add(pid)


def unregister(pid: int) -> None:
    with _lock:
        _pids.discard(pid)


def live() -> list[int]:
    with _lock:
        return sorted(_pids)


def kill_all() -> None:
    """SIGKILL every registered QEMU now (PR_SET_PDEATHSIG would do it too, once baker is gone)."""
    with _lock:
        for pid in list(_pids):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
