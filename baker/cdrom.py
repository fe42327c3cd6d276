"""The extra CD-ROM from `cd_files` + `cd_content` (kickstart, autoinstall, autounattend, ...).

Same layout rules as Packer so templates port over: a file lands at the CD root under its name;
`dir` lands as `dir/...`, `dir/` (trailing slash) puts the directory's contents at the root;
globs expand; symlinks are followed; `cd_content` wins over a file at the same path.
Written with pycdlib (baker.iso9660), so no xorriso/mkisofs is needed on the host.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from baker.errors import BakerError
from baker.iso9660 import write_iso

log = logging.getLogger("baker.cdrom")

MAX_LABEL = 32  # ISO 9660 volume identifier length


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def collect_cd_files(patterns: Sequence[str], base_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """CD path → host file for `cd_files` entries (relative to base_dir, or absolute)."""
    base = Path(base_dir)
    out: dict[str, Path] = {}
    origin: dict[str, str] = {}

    def add(cd_path: str, src: Path, entry: str) -> None:
        if cd_path in out and out[cd_path].resolve() != src.resolve():
            raise BakerError(
                f"cd_files: '{entry}' and '{origin[cd_path]}' both put a file at /{cd_path} on the CD",
                hint="rename one, or list a directory with a trailing '/' only where you mean its contents",
            )
        out[cd_path] = src
        origin[cd_path] = entry

    for entry in patterns:
        full = os.path.join(base, entry)
        if _is_glob(entry):
            matches = sorted(glob.glob(full, recursive=True))
            if not matches:
                raise BakerError(f"cd_files: '{entry}' matches no files under {base}")
        else:
            if not os.path.exists(full):
                raise BakerError(f"cd_files: '{entry}' does not exist (looked for {full})",
                                 hint="paths are relative to the template's folder")
            matches = [full]
        for m in matches:
            src = Path(m)
            if src.is_dir():
                # "dir" keeps its own name on the CD; "dir/" contributes only its contents
                keep = "" if m.endswith(("/", os.sep)) else src.name
                for dirpath, _dirs, names in os.walk(src, followlinks=True):
                    rel_dir = os.path.relpath(dirpath, src)
                    for name in sorted(names):
                        rel = os.path.normpath(os.path.join(keep, rel_dir, name))
                        add(Path(rel).as_posix(), Path(dirpath) / name, entry)
            elif src.is_file():
                add(src.name, src, entry)
            else:
                raise BakerError(f"cd_files: '{m}' is neither a file nor a directory")
    return out


def build_cd(
    dest: str | os.PathLike[str],
    *,
    files: Sequence[str] = (),
    content: Mapping[str, str | bytes] | None = None,
    label: str = "baker",
    base_dir: str | os.PathLike[str] = ".",
) -> Path:
    """Write the CD image to `dest` (atomically) and return its path."""
    if not label or len(label) > MAX_LABEL:
        raise BakerError(f"cd_label '{label}' must be 1-{MAX_LABEL} characters long")
    entries: dict[str, bytes | str | Path] = dict(collect_cd_files(files, base_dir))
    for path, data in (content or {}).items():
        clean = Path(os.path.normpath("/" + path.strip())).as_posix().lstrip("/")
        if not clean:
            raise BakerError(f"cd_content: '{path}' is not a file path")
        if clean in entries and not isinstance(entries[clean], str | bytes):
            log.info("cd_content /%s replaces the file from cd_files", clean)
        entries[clean] = data
    if not entries:
        raise BakerError("the CD would be empty: cd_files and cd_content list nothing")
    log.info("writing CD %s (label %s, %d files)", dest, label, len(entries))
    return write_iso(dest, entries, label=label)
