"""Content-addressed, read-only blobs: blobs/sha256/<2 hex>/<64 hex>; identical files are stored once.

Blobs are reflinked (FICLONE) where the filesystem can, else copied, never hard-linked: a hard link
would share the inode with the published output dir, and a VM booted from that file (as root, who
ignores the read-only mode) would change the stored version in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from baker.errors import BakerError
from baker.fsutil import file_digest

_FICLONE = 0x40049409


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def add(self, src: Path, sha256: str | None = None) -> tuple[str, int]:
        """Store `src` (digest checked on the stored copy); returns (sha256, size)."""
        want = sha256 or file_digest(src)
        dest = self.path(want)
        if dest.is_file():
            return want, dest.stat().st_size
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        tmp = Path(name)
        try:
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                try:
                    fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
                except OSError:
                    shutil.copyfileobj(fin, fout, 4 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            got = file_digest(tmp)
            if got != want:
                raise BakerError(f"{src} changed while it was being stored (sha256 {got}, expected {want})")
            os.chmod(tmp, 0o444)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)  # a concurrent writer of the same content wrote identical bytes
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return want, dest.stat().st_size

    def all(self) -> list[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return []
        return [p.name for d in base.iterdir() if d.is_dir() for p in d.iterdir()]

    def remove(self, sha256: str) -> int:
        p = self.path(sha256)
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return 0
        return size
