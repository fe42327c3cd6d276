"""Base-image probing and build-disk preparation with qemu-img.

The cached base is never written: builds run on a qcow2 overlay backed by it (or on a full copy),
and every disk appears at its final path only once qemu-img has finished with it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from baker.errors import BakerError, CommandError
from baker.fsutil import atomic_path
from baker.proc import run
from baker.units import human_size

log = logging.getLogger("baker.sources")

QEMU_IMG = "qemu-img"
INSTALL_HINT = "install qemu-img (Debian/Ubuntu: apt-get install qemu-utils)"
PROBE_TIMEOUT = 120.0
CHECK_TIMEOUT = 900.0
FORMATS = ("qcow2", "raw")

# files people download by mistake instead of the image itself
_MAGIC = {
    b"\xfd7zXZ\x00": "xz-compressed",
    b"\x1f\x8b": "gzip-compressed",
    b"BZh": "bzip2-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PK\x03\x04": "a zip archive",
}


@dataclass(frozen=True)
class ImageInfo:
    """What qemu-img says about a disk image; sizes in bytes."""

    path: Path
    format: str
    virtual_size: int
    actual_size: int | None = None
    backing_file: str | None = None
    backing_format: str | None = None
    dirty: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _bad_image(path: Path, why: str, *, hint: str | None = None) -> BakerError:
    return BakerError(f"{path} is not a usable disk image: {why}",
                      hint=hint or "re-download it, or check that the URL points at the image itself")


def _sniff_raw(path: Path, size: int) -> None:
    """qemu-img calls anything unknown 'raw'; catch the common wrong downloads before they boot."""
    if size == 0:
        raise _bad_image(path, "the file is empty")
    with open(path, "rb") as f:
        head = f.read(512)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise _bad_image(path, f"it is {what}", hint="decompress it first, or point the URL at the "
                                                          "uncompressed image")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")):
        raise _bad_image(path, "it is an HTML/XML page, not an image (a login or error page?)")


def _check_qcow2(path: Path) -> None:
    """`qemu-img check`: a truncated or damaged qcow2 must fail here, not mid-boot."""
    proc = run([QEMU_IMG, "check", "-U", "-f", "qcow2", path], check=False, timeout=CHECK_TIMEOUT,
               hint=INSTALL_HINT)
    if proc.returncode == 0:
        return
    if proc.returncode == 3:
        log.warning("%s has leaked clusters (harmless, wastes space)", path)
        return
    summary = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    shown = [*errors[:4], *([f"... ({len(errors) - 4} more)"] if len(errors) > 4 else []), *summary]
    what = {1: "qemu-img check could not finish", 2: "qemu-img check found corruption"}.get(
        proc.returncode, f"qemu-img check exited {proc.returncode}")
    raise _bad_image(path, what + ":\n" + "\n".join(f"  | {ln}" for ln in shown),
                     hint="the file is truncated or damaged; delete it and download it again")


def probe_image(path: str | os.PathLike[str], fmt: str = "auto") -> ImageInfo:
    """Format, sizes and backing file of an image; raises naming the file if it is corrupt or not
    what the template says (`fmt`), since a wrong format boots garbage instead of failing."""
    path = Path(path)
    if not path.exists():
        raise BakerError(f"{path}: no such file")
    if fmt not in ("auto", *FORMATS):
        raise BakerError(f"unsupported image format '{fmt}' for {path}; use auto, qcow2 or raw")
    proc = run([QEMU_IMG, "info", "--output=json", "-U", path], check=False, timeout=PROBE_TIMEOUT,
               hint=INSTALL_HINT)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"qemu-img info exited {proc.returncode}"])[-1]
        raise _bad_image(path, why.removeprefix("qemu-img: "))
    try:
        data = json.loads(proc.stdout)
        detected = str(data["format"])
        virtual = int(data["virtual-size"])
    except (ValueError, KeyError, TypeError) as e:
        raise _bad_image(path, f"unexpected qemu-img info output ({e})") from e
    if fmt != "auto" and detected != fmt:
        raise _bad_image(path, f"the template says format {fmt}, but the file is {detected}",
                         hint=f"set format: {detected} (or auto)")
    if detected == "raw":
        _sniff_raw(path, path.stat().st_size)
    elif detected == "qcow2":
        if data.get("format-specific", {}).get("data", {}).get("corrupt"):
            raise _bad_image(path, "its qcow2 header is marked corrupt")
        _check_qcow2(path)
    elif detected not in FORMATS:
        log.info("%s is %s; qemu-img will convert it as needed", path, detected)
    return ImageInfo(
        path=path,
        format=detected,
        virtual_size=virtual,
        actual_size=data.get("actual-size"),
        backing_file=data.get("full-backing-filename") or data.get("backing-filename"),
        backing_format=data.get("backing-filename-format"),
        dirty=bool(data.get("dirty-flag", False)),
        raw=data,
    )


def prepare_build_disk(
    base: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    mode: Literal["overlay", "copy"] = "overlay",
    size: int,
    fmt: Literal["auto", "qcow2", "raw"] = "auto",
) -> Path:
    """The disk the build VM writes: a qcow2 overlay on `base` or a standalone qcow2 copy, grown to `size`.

    Overlays point at the absolute base path, so the base must stay where it is (the cache keeps it).
    Disks never shrink: a `size` below the base's virtual size is an error naming both sizes.
    """
    if mode not in ("overlay", "copy"):
        raise BakerError(f"unknown disk mode '{mode}'; use overlay or copy")
    base = Path(base).absolute()
    dest = Path(dest)
    info = probe_image(base, fmt)
    if size < info.virtual_size:
        raise BakerError(
            f"disk_size {human_size(size)} ({size} bytes) is smaller than the base image {base}, "
            f"which is {human_size(info.virtual_size)} ({info.virtual_size} bytes); disks are never shrunk",
            hint=f"set machine.disk_size to at least {human_size(info.virtual_size)}",
        )
    grow = size > info.virtual_size
    with atomic_path(dest) as tmp:
        try:
            if mode == "overlay":
                argv: list[str | Path] = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", info.format,
                                          "-b", base, tmp]
                run([*argv, str(size)] if grow else argv, hint=INSTALL_HINT)
            else:
                run([QEMU_IMG, "convert", "-f", info.format, "-O", "qcow2", base, tmp], hint=INSTALL_HINT)
                if grow:
                    run([QEMU_IMG, "resize", "-q", "-f", "qcow2", tmp, str(size)], hint=INSTALL_HINT)
        except CommandError as e:
            raise BakerError(f"cannot prepare build disk {dest} from {base}:\n{e.message}",
                             hint=e.hint) from e
    log.info("build disk %s: %s of %s, %s", dest, mode, base, human_size(size))
    return dest


def create_empty_disk(dest: str | os.PathLike[str], size: int, *,
                      fmt: Literal["qcow2", "raw"] = "qcow2") -> Path:
    """A blank disk for ISO installs (sparse, so `size` costs nothing until the guest writes)."""
    if size <= 0:
        raise BakerError(f"disk size must be positive, got {size} bytes")
    if fmt not in FORMATS:
        raise BakerError(f"unsupported disk format '{fmt}'; use qcow2 or raw")
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        run([QEMU_IMG, "create", "-q", "-f", fmt, tmp, str(size)], hint=INSTALL_HINT)
    return dest
