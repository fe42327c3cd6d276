"""Small ISO 9660 images written with pycdlib (no xorriso on the host): cloud-init seeds and cd_files."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pycdlib

from baker.fsutil import atomic_path


def _iso_name(rel: str, index: int, is_dir: bool) -> str:
    """A strict ISO 9660 level-1 name; the real name travels in Rock Ridge and Joliet."""
    stem = re.sub(r"[^A-Z0-9_]", "_", Path(rel).stem.upper())[:6] or "F"
    stem = f"{stem}{index:02d}"[:8]
    if is_dir:
        return stem
    ext = re.sub(r"[^A-Z0-9_]", "_", Path(rel).suffix[1:].upper())[:3]
    return f"{stem}.{ext};1"


def write_iso(dest: str | os.PathLike[str], files: Mapping[str, bytes | str | Path], *, label: str) -> Path:
    """Write `files` (ISO path → content or host file) as an ISO with Rock Ridge + Joliet names.

    Paths may contain folders ("a/b/c.txt"). The image is written atomically.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", joliet=3, vol_ident=label[:32])
    made_dirs: dict[str, str] = {"": ""}
    counter = 0

    def ensure_dir(rel_dir: str) -> str:
        nonlocal counter
        if rel_dir in made_dirs:
            return made_dirs[rel_dir]
        parent_rel, _, base = rel_dir.rpartition("/")
        parent_iso = ensure_dir(parent_rel)
        counter += 1
        iso_dir = f"{parent_iso}/{_iso_name(base, counter, True)}"
        iso.add_directory(iso_path=iso_dir, rr_name=base, joliet_path="/" + rel_dir)
        made_dirs[rel_dir] = iso_dir
        return iso_dir

    buffers = []
    for rel in sorted(files):
        content = files[rel]
        rel_clean = rel.strip("/")
        parent_rel, _, base = rel_clean.rpartition("/")
        parent_iso = ensure_dir(parent_rel)
        counter += 1
        iso_path = f"{parent_iso}/{_iso_name(base, counter, False)}"
        if isinstance(content, Path):
            data = content.read_bytes()
        else:
            data = content.encode() if isinstance(content, str) else content
        buf = io.BytesIO(data)
        buffers.append(buf)
        iso.add_fp(buf, len(data), iso_path, rr_name=base, joliet_path="/" + rel_clean)
    with atomic_path(dest) as tmp:
        iso.write(str(tmp))
        iso.close()
    return Path(dest)


def read_iso(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file in an ISO by its Rock Ridge (else Joliet) path; used by tests and `baker inspect`."""
    iso = pycdlib.PyCdlib()
    iso.open(os.fspath(path))
    out: dict[str, bytes] = {}
    try:
        facade_kind = "rr_path" if iso.has_rock_ridge() else "joliet_path"
        for root, _dirs, names in iso.walk(**{facade_kind: "/"}):
            for name in names:
                p = f"{root.rstrip('/')}/{name}"
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, **{facade_kind: p})
                out[p.lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    return out
