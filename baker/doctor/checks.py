"""The host checks behind `baker doctor`; each says what it found, why it matters and what to do.

A check is `ok`, `warn` (builds work, but slower or without a feature) or `fail` (a build cannot
work); the command exits non-zero on any `fail`, so provisioning scripts can gate on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from baker.errors import BakerError
from baker.paths import base_images_dir, cache_root
from baker.proc import run

#: below this much free space in the cache or temp dir, a build's disk and exports will not fit
MIN_FREE_BYTES = 4 << 30


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _version(argv: list[str]) -> str | None:
    try:
        out = run(argv, check=False, timeout=20)
    except BakerError:
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else None


def check_qemu(qemu_binary: str) -> Check:
    v = _version([qemu_binary, "--version"])
    if v is None:
        return Check("qemu", "fail", f"{qemu_binary} not found or not working",
                     "apt-get install qemu-system-x86")
    return Check("qemu", "ok", f"{shutil.which(qemu_binary) or qemu_binary}: {v}")


def check_qemu_img() -> Check:
    v = _version(["qemu-img", "--version"])
    if v is None:
        return Check("qemu-img", "fail", "qemu-img not found", "apt-get install qemu-utils")
    return Check("qemu-img", "ok", f"{shutil.which('qemu-img')}: {v}")


def check_accelerator(qemu_binary: str, *, reprobe: bool) -> Check:
    from baker.machine.accel import (
        cache_file,
        choose_accelerator,
        forget_kvm_results,
        recorded_kvm_problem,
    )

    if reprobe:
        forget_kvm_results()
    recorded = recorded_kvm_problem(qemu_binary)
    override = os.environ.get("BAKER_ACCEL", "").strip()
    try:
        choice = choose_accelerator("auto", qemu_binary)
    except BakerError as e:
        return Check("accelerator", "fail", str(e.message), e.hint or "")
    source = (f"recorded for this host boot in {cache_file()}" if recorded is not None
              else f"probed now, recorded in {cache_file()}")
    clear = f"after fixing the host: baker doctor --reprobe (or rm {cache_file()})"
    if override:
        return Check("accelerator", "ok" if choice.accel == "kvm" or override == "tcg" else "warn",
                     f"{choice.accel} (BAKER_ACCEL={override} overrides every template)", "")
    if choice.accel == "kvm":
        return Check("accelerator", "ok", f"kvm: the KVM probe guest ran ({source}); every real boot is "
                                          f"still watched, and under `auto` a guest KVM stops restarts "
                                          f"under TCG and is recorded here", clear)
    return Check("accelerator", "warn",
                 f"tcg: `auto` falls back to software emulation (10-50x slower) because {choice.reason} "
                 f"({source})",
                 f"{clear}; set BAKER_ACCEL=tcg or machine.accelerator: tcg to silence the warning")


def check_uefi() -> Check:
    from baker.machine.firmware import find_firmware

    try:
        fw = find_firmware("uefi")
    except BakerError as e:
        return Check("uefi firmware", "warn", f"none found: {e.message}; `firmware: uefi` builds will fail",
                     e.hint or "apt-get install ovmf")
    try:
        sb = find_firmware("uefi", secure_boot=True)
        secure = f"; secure boot: {sb.code}"
    except BakerError:
        secure = "; no secure-boot build (secure_boot: true will fail)"
    return Check("uefi firmware", "ok", f"{fw.code} (vars template {fw.vars_template}){secure}")


#: (tool, needed for, package)
TOOLS: tuple[tuple[str, str, str], ...] = (
    ("tar", "gce, ova and vagrant exports", "tar"),
    ("ssh", "--on-error=abort debugging sessions", "openssh-client"),
)


def check_tools() -> list[Check]:
    out = []
    for tool, why, pkg in TOOLS:
        path = shutil.which(tool)
        out.append(Check(f"tool {tool}", "ok" if path else "warn",
                         path or f"not found: needed for {why}", "" if path else f"apt-get install {pkg}"))
    return out


def check_space(label: str, path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as e:
        return Check(label, "fail", f"{path}: {e.strerror}")
    free = st.f_bavail * st.f_frsize
    from baker.units import human_size

    writable = os.access(probe, os.W_OK)
    detail = f"{path}: {human_size(free)} free" + ("" if writable else " (not writable)")
    if not writable:
        return Check(label, "fail", detail, "set BAKER_CACHE_DIR / TMPDIR to a writable place")
    if free < MIN_FREE_BYTES:
        return Check(label, "warn", detail,
                     f"builds need a few GiB; free at least {human_size(MIN_FREE_BYTES)}")
    return Check(label, "ok", detail)


def check_base_image() -> Check:
    link = base_images_dir() / "debian-12-base.qcow2"
    if link.exists():
        return Check("base image", "ok", f"{link.resolve()} (the demo and the tests use it)")
    return Check("base image", "warn", f"not built yet ({link})",
                 "make base-image (scripts/build-base-image) builds it; only the demo and tests need it")


def run_checks(qemu_binary: str = "qemu-system-x86_64", *, reprobe: bool = False) -> list[Check]:
    import tempfile

    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_qemu(qemu_binary),
        check_qemu_img,
        lambda: check_accelerator(qemu_binary, reprobe=reprobe),
        check_uefi,
        check_tools,
        lambda: check_space("cache dir", cache_root()),
        lambda: check_space("work dir (TMPDIR)", Path(tempfile.gettempdir())),
        check_base_image,
    ]
    out: list[Check] = []
    for step in steps:
        result = step()
        out += result if isinstance(result, list) else [result]
    return out
