"""Intermediate disks that several exports derive from the same master, made once per export run.

Compressing is nearly all of an export's time, and exports overlap: the OVA's disk is the VMDK export's
disk (only the embedded descriptor differs), a libvirt Vagrant box carries the compressed qcow2 the
qcow2 export makes, the VMDK's grains are that qcow2's deflated clusters (vmdkstream.py), and every
conversion used to decompress the base image's clusters again. So
`run_exports` gives its exports one `DerivedCache`: an entry is keyed by its conversion parameters,
the first export that needs it makes it (the others wait, giving their job slot to an export that can
work meanwhile), and nobody ever writes to an entry. An export publishes an entry by hard link at most
once (the entry is deleted when the run ends, so no two outputs share an inode) and by copy after that;
scratch files (what goes into a tar) are links. Entries live in the run's work dir, never in the
output dir, so the all-or-nothing staging of each export (base.Staging) is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from baker.errors import BakerError
from baker.fsutil import remove
from baker.proc import run


class OrderedSlots:
    """The run's job slots, granted by rank (lowest first) rather than by whichever thread asks first,
    so the costly exports run_exports ranks first really start first."""

    def __init__(self, n: int) -> None:
        self._free = max(1, n)
        self._waiting: list[int] = []
        self._cond = threading.Condition()

    def acquire(self, rank: int) -> None:
        with self._cond:
            heapq.heappush(self._waiting, rank)
            while not (self._free > 0 and self._waiting[0] == rank):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next rank may take another free slot

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


@dataclass
class _Entry:
    done: threading.Event = field(default_factory=threading.Event)
    path: Path | None = None
    error: BaseException | None = None
    published: bool = False


class DerivedCache:
    """Shared intermediates of one export run (see module doc). Thread-safe."""

    def __init__(self, root: Path, *, flatten: bool = False, slots: OrderedSlots | None = None,
                 threads: int | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="derived-", dir=root))
        self.flatten = flatten  # worth a flat raw copy of the master only when several exports read it
        self.slots = slots  # the run's job slots: released while this thread waits for another's entry
        self.threads = threads or os.cpu_count() or 1  # for parallel compressors (qemu-img -m, pigz -p)
        self._entries: dict[tuple, _Entry] = {}
        self._lock = threading.Lock()
        self._held = threading.local()

    # --- job slots -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, rank: int = 0) -> Iterator[None]:
        """Hold one of the run's job slots for this thread (run_exports wraps each export in it);
        lower ranks get a free slot first."""
        if self.slots is None:
            yield
            return
        self.slots.acquire(rank)
        self._held.rank = rank
        try:
            yield
        finally:
            self._held.rank = None
            self.slots.release()

    def _wait(self, entry: _Entry) -> None:
        rank = getattr(self._held, "rank", None)
        if self.slots is None or rank is None:
            entry.done.wait()
            return
        self.slots.release()  # let another export work while this one waits
        try:
            entry.done.wait()
        finally:
            self.slots.acquire(rank)

    # --- entries ---------------------------------------------------------------------------------------

    def get(self, key: tuple, make: Callable[[Path], None], suffix: str) -> Path:
        """The entry for `key`, made by `make(path)` on first use; a failure is every asker's failure."""
        with self._lock:
            entry = self._entries.get(key)
            mine = entry is None
            if mine:
                entry = self._entries[key] = _Entry()
        assert entry is not None
        if not mine:
            self._wait(entry)
        else:
            name = hashlib.sha256(repr(key).encode()).hexdigest()[:16] + suffix
            path = self.root / name
            try:
                make(path)
                entry.path = path
            except BaseException as e:
                remove(path)
                entry.error = e
                raise
            finally:
                entry.done.set()
        if entry.error is not None:
            raise BakerError(f"a disk shared with another export could not be made: {entry.error}")
        assert entry.path is not None
        return entry.path

    def publish(self, entry_path: Path, dest: Path) -> None:
        """Put an entry at an output path: a hard link the first time, a copy after (outputs never share
        an inode, since the entry itself is removed when the run ends)."""
        with self._lock:
            entry = next((e for e in self._entries.values() if e.path == entry_path), None)
            first = entry is not None and not entry.published
            if first:
                entry.published = True
        if first and _try_link(entry_path, dest):
            return
        copy_file(entry_path, dest)

    def close(self) -> None:
        remove(self.root)


def _try_link(src: Path, dest: Path) -> bool:
    try:
        os.link(src, dest)
        return True
    except OSError:
        return False  # another filesystem, or links not supported


def copy_file(src: Path, dest: Path) -> None:
    """A private copy: reflinked where the filesystem can, holes kept.

    Also what a tar reads, never a hard link of an entry: publishing links the entry's inode, which
    changes its ctime, and GNU tar fails a member whose ctime changed while it read it."""
    run(["cp", "--reflink=auto", "--sparse=always", src, dest], hint="install GNU coreutils")
