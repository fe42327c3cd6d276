"""One build per output at a time: an flock on a file beside the output dir.

The kernel drops an flock when its holder dies, however it dies, so a lock left by a killed build
is never stale: the next build takes it at once and says whose it was. The file also names the
holder (pid, host, template, start time) for the message the second build prints.

The last holder to leave unlinks the file, so a finished build leaves nothing beside its output. A
waiter may then hold an flock on the unlinked inode: after every acquisition the file at the path
must still be the one locked, or the waiter opens the path again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from baker.errors import EXIT_LOCKED, BakerError


class OutputLocked(BakerError):
    exit_code = EXIT_LOCKED


def lock_path(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.lock"


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead, only not yet reaped by its parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def output_lock(output_dir: Path, *, template: str, wait: bool = False,
                cancel: threading.Event | None = None,
                notice: Callable[[str, str], None] | None = None, shared: bool = False) -> Iterator[Path]:
    """Hold the output's lock for the block; OutputLocked at once when another build has it
    (or, with wait=True, block until it is free or `cancel` is set). `notice(kind, message)` hears
    about waiting and about taking over a dead build's lock. `shared`: a reader (a layer building on
    this output's image) — readers run side by side; a build of the output waits for them."""
    path = lock_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = _holder(path)
            who = (f"pid {h.get('pid')} on {h.get('host')}, building {h.get('template')} since "
                   f"{h.get('started')}") if h else "another process"
            if not wait:
                raise OutputLocked(f"{output_dir} is being built by {who}",
                                   hint="wait for it, or add --wait-lock to queue behind it; "
                                        "builds of different outputs run side by side") from None
            if not announced and notice is not None:
                notice("info", f"waiting for {output_dir}: it is being built by {who}")
                announced = True
            if cancel is not None and cancel.wait(0.5):
                raise BakerError(f"stopped while waiting for the lock on {output_dir}") from None
            if cancel is None:
                time.sleep(0.5)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder we waited for unlinked it on the way out: lock the new one
    try:
        if shared:  # the file names the last builder; readers leave it alone
            yield path
            return
        old = _holder(path)
        if old and notice is not None and old.get("pid") != os.getpid() and not _alive(old.get("pid")) \
                and old.get("host") == socket.gethostname() and not old.get("released"):
            notice("warning", f"took over the lock on {output_dir} from pid {old.get('pid')} "
                              f"({old.get('template')}), which died without releasing it")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "template": template,
              "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield path
    finally:
        _leave(fd, path)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _leave(fd: int, path: Path) -> None:
    """Unlink the lock file when no one else holds it, then drop the flock (by closing)."""
    try:
        # a reader upgrades without blocking: it fails while another reader or a waiting writer
        # holds the file, and then the last of them unlinks it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):
            path.unlink()
    except (BlockingIOError, FileNotFoundError):
        pass
    finally:
        os.close(fd)
