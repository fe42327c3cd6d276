"""The checkpoint cache: read-only qcow2 layers chained by relative backing names, in one folder.

    <cache>/checkpoints/lock                 flock: shared while a build looks up or adds layers,
                                             exclusive while prune decides and deletes
    <cache>/checkpoints/base-<sha256>.<fmt>  a copy of a base image (0444), the root of chains
    <cache>/checkpoints/<id>.qcow2           a layer (0444), backing file "<parent>" (same folder)
    <cache>/checkpoints/<id>.json            its metadata; written last, so a layer without it is
                                             not (yet) a checkpoint
    <cache>/checkpoints/<id>.session         beside a chain's first layer: its first boot's
                                             cloud-init instance-id and SSH keys (0600)
    <cache>/checkpoints/work-<random>.qcow2  a running build's active layer (flock'd)

Backing names are relative to the folder, so the cache can move; layers are never rewritten (no
`qemu-img rebase`), only added and deleted. A build holds a shared flock on every layer it boots
from, and prune never deletes a locked layer, a layer another layer backs, or a base still in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from baker.errors import BakerError
from baker.fsutil import atomic_write, file_digest
from baker.paths import cache_root
from baker.proc import run

QEMU_IMG = "qemu-img"
DEFAULT_MAX_BYTES = 20 * 1024**3  # BAKER_CHECKPOINT_MAX_SIZE overrides; pruned after every build
_WORK_PREFIX = "work-"
_BASE_PREFIX = "base-"


@dataclass
class Layer:
    """One saved checkpoint: the disk after provisioner `index` of `template`."""

    id: str
    key: str  # the chain key (baker.checkpoint.keys)
    parent: str  # the backing file's name in the cache folder: "<id>.qcow2" or "base-<sha256>.<fmt>"
    template: str
    index: int
    step: str
    created: float  # epoch seconds
    sha256: str  # of the layer file, checked before a build boots from it
    size: int

    @property
    def file(self) -> str:
        return f"{self.id}.qcow2"


@dataclass
class Resume:
    """The deepest valid checkpoint of a chain: layers from the root (first) to the resume point."""

    layers: list[Layer]

    @property
    def top(self) -> Layer:
        return self.layers[-1]

    @property
    def depth(self) -> int:
        return self.top.index


@dataclass
class Pins:
    """Shared flocks on the files a build uses, so prune leaves them alone until the build ends."""

    fds: list[int] = field(default_factory=list)

    def add(self, path: Path) -> None:
        """Shared, even on a build's own work layer: two flocks of one process on two descriptors
        of a file conflict like any others, and prune only needs to see that someone holds it."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self.fds.append(fd)

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


@dataclass
class Entry:
    """What `baker cache list` shows for a file of the checkpoint cache."""

    path: Path
    size: int
    last_used: float
    layer: Layer | None  # None: a base copy, or a running build's work layer
    children: int = 0
    in_use: bool = False


def max_bytes_from_env() -> int:
    from baker.units import parse_size

    value = os.environ.get("BAKER_CHECKPOINT_MAX_SIZE")
    return parse_size(value) if value else DEFAULT_MAX_BYTES


def _disk_usage(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def _locked(path: Path) -> bool:
    """True when some build holds a flock on `path` (or it vanished)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class CheckpointCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root() / "checkpoints"

    # -- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, *, exclusive: bool = False) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------------
    def layers(self) -> dict[str, Layer]:
        """Complete layers by id (metadata and file both present)."""
        out: dict[str, Layer] = {}
        if not self.root.is_dir():
            return out
        for meta in self.root.glob("*.json"):
            try:
                layer = Layer(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if (self.root / layer.file).exists():
                out[layer.id] = layer
        return out

    def find(self, keys: list[str], *, deepest: int, ttl: float, pins: Pins,
             now: float | None = None) -> Resume | None:
        """The deepest checkpoint for keys[1..deepest] whose whole chain is intact and younger than
        `ttl`; its files are pinned (shared flocks) before the cache lock is let go."""
        now = time.time() if now is None else now
        with self.locked():
            layers = self.layers()
            for depth in range(deepest, 0, -1):
                found = sorted((la for la in layers.values() if la.key == keys[depth] and la.index == depth),
                               key=lambda la: la.created, reverse=True)
                for top in found:
                    chain = self._chain(top, layers, keys, now, ttl)
                    if chain is not None:
                        for la in chain:
                            pins.add(self.root / la.file)
                        pins.add(self.root / chain[0].parent)
                        for la in chain:
                            os.utime(self.root / f"{la.id}.json")  # last used, for prune
                        return Resume(chain)
        return None

    def _chain(self, top: Layer, layers: dict[str, Layer], keys: list[str], now: float,
               ttl: float) -> list[Layer] | None:
        """Root-first layers under `top`, or None if one is missing, stale, expired or damaged."""
        chain = [top]
        while chain[-1].index > 1:
            parent = layers.get(chain[-1].parent.removesuffix(".qcow2"))
            if parent is None or parent.index != chain[-1].index - 1 or parent.key != keys[parent.index]:
                return None
            chain.append(parent)
        chain.reverse()
        if not (self.root / chain[0].parent).exists():
            return None
        if any(now - la.created > ttl for la in chain):
            return None
        for la in chain:
            if file_digest(self.root / la.file) != la.sha256:
                return None
        return chain

    # -- writing ---------------------------------------------------------------------------------
    def ensure_base(self, src: Path, sha256: str, fmt: str) -> str:
        """A read-only copy of the base image in the cache (the root every chain backs onto), so a
        base that is later replaced or booted in place never changes a checkpoint under it."""
        name = f"{_BASE_PREFIX}{sha256}.{fmt}"
        dest = self.root / name
        if dest.exists():
            return name
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{secrets.token_hex(4)}.part"
        h = hashlib.sha256()
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
            if h.hexdigest() != sha256:
                raise BakerError(f"the base image {src} changed while it was copied into the checkpoint "
                                 f"cache (sha256 {h.hexdigest()}, expected {sha256})")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return name

    def start_layer(self, backing: str, backing_format: str, pins: Pins, size: int | None = None) -> Path:
        """A new active layer on `backing` (a name in the cache folder), pinned with its backing
        (prune would otherwise not know that a work layer depends on it)."""
        path = self.root / f"{_WORK_PREFIX}{secrets.token_hex(8)}.qcow2"
        argv: list[str | Path] = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", backing_format,
                                  "-b", backing, path]
        run([*argv, str(size)] if size else argv, cwd=self.root,
            hint="install qemu-img (apt-get install qemu-utils)")
        pins.add(path)
        pins.add(self.root / backing)
        return path

    def new_id(self, key: str) -> str:
        return f"{key[:24]}-{int(time.time())}-{secrets.token_hex(3)}"

    def seal(self, work: Path, layer_id: str) -> Path:
        """Give an active layer its final name (still invisible: no metadata yet). The builder's
        flock and QEMU's open file follow the inode."""
        dest = self.root / f"{layer_id}.qcow2"
        os.rename(work, dest)
        return dest

    def publish(self, layer: Layer) -> Layer:
        """Make a sealed layer a checkpoint: read-only, digested, metadata written last."""
        path = self.root / layer.file
        os.chmod(path, 0o444)
        layer.sha256 = file_digest(path)
        layer.size = _disk_usage(path)
        atomic_write(self.root / f"{layer.id}.json", json.dumps(asdict(layer), indent=1) + "\n")
        return layer

    # -- listing and pruning -----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        layers = {la.file: la for la in self.layers().values()}
        children: dict[str, int] = {}
        for la in layers.values():
            children[la.parent] = children.get(la.parent, 0) + 1
        out = []
        for p in sorted(self.root.iterdir()):
            if p.name == "lock" or p.suffix in (".json", ".session") or p.name.startswith("."):
                continue
            la = layers.get(p.name)
            meta = self.root / f"{la.id}.json" if la else p
            try:
                used = meta.stat().st_mtime
            except OSError:
                continue
            out.append(Entry(p, _disk_usage(p), used, la, children.get(p.name, 0), _locked(p)))
        return out

    def prune(self, *, older_than: float | None = None, max_bytes: int | None = None,
              everything: bool = False, now: float | None = None) -> list[Path]:
        """Delete layers not used for `older_than` seconds, then least recently used ones until the
        cache fits `max_bytes` (`everything`: all unused). Never a locked layer, never one that backs
        another; stale work layers of dead builds and unreferenced bases always go."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        with self.locked(exclusive=True):
            for p in self.root.iterdir():
                orphan = p.suffix in (".qcow2", ".session") and not p.name.startswith(_BASE_PREFIX) \
                    and not (self.root / f"{p.stem}.json").exists()
                if (p.name.startswith(_WORK_PREFIX) or orphan or p.name.endswith(".part")) and not _locked(p):
                    p.unlink(missing_ok=True)
                    removed.append(p)
            while True:
                entries = self.entries()
                total = sum(e.size for e in entries)
                leaves = sorted((e for e in entries
                                 if e.layer is not None and not e.children and not e.in_use),
                                key=lambda e: e.last_used)
                victim = next((e for e in leaves if everything or (older_than is not None
                                                                   and now - e.last_used > older_than)), None)
                if victim is None and max_bytes is not None and total > max_bytes and leaves:
                    victim = leaves[0]
                if victim is None:
                    break
                assert victim.layer is not None
                (self.root / f"{victim.layer.id}.json").unlink(missing_ok=True)
                (self.root / f"{victim.layer.id}.session").unlink(missing_ok=True)
                victim.path.unlink(missing_ok=True)
                removed.append(victim.path)
            for e in self.entries():
                if e.path.name.startswith(_BASE_PREFIX) and not e.children and not e.in_use:
                    e.path.unlink(missing_ok=True)
                    removed.append(e.path)
        return removed
