"""Extra digest files beside the published artifacts, in coreutils format (`sha512sum -c SHA512SUMS`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from baker.fsutil import atomic_write
from baker.post.context import PostContext

_CHUNK = 1 << 20


def write_digest_files(types: list[str], ctx: PostContext) -> list[Path]:
    """One `<ALGO>SUMS` file per type; every artifact is read once for all of them.

    sha256 is already in SHA256SUMS (written by the export step), so it is not written twice.
    """
    algos = [a for a in types if a != "sha256"]
    if not algos:
        ctx.log.info("checksum: SHA256SUMS is already written by the export step")
        return []
    lines: dict[str, list[str]] = {a: [] for a in algos}
    for _, path in sorted(ctx.artifacts, key=lambda a: a[1].name):
        hashers = {a: hashlib.new(a) for a in algos}
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                for h in hashers.values():
                    h.update(chunk)
        for a, h in hashers.items():
            lines[a].append(f"{h.hexdigest()}  {path.name}\n")
    out = []
    for a in algos:
        dest = ctx.output_dir / f"{a.upper()}SUMS"
        atomic_write(dest, "".join(lines[a]))
        ctx.log.info("checksum: wrote %s (%d files)", dest.name, len(lines[a]))
        out.append(dest)
    return out
