"""Choosing the accelerator without ever hanging on a broken /dev/kvm.

The probe runs a 64 KiB firmware whose reset vector writes to QEMU's isa-debug-exit port: a working
accelerator exits in milliseconds; a broken one fails to start or hangs and is killed after a few
seconds. Results are cached per host boot (boot_id) so the probe costs nothing on later builds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from baker.errors import BakerError

log = logging.getLogger("baker.machine")

_KVM_GET_API_VERSION = 0xAE00
_PROBE_EXIT = (0x42 << 1) | 1  # isa-debug-exit turns a write of v into exit status (v << 1) | 1


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" | "tcg"
    requested: str
    reason: str = ""  # why KVM was not used, when it was not

    @property
    def fell_back(self) -> bool:
        return self.requested == "auto" and self.accel == "tcg"


def _probe_firmware() -> bytes:
    bios = bytearray(b"\xf4" * 65536)
    code = bytes([0xB0, 0x42, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])  # mov al,0x42; out 0xf4,al; hlt; jmp $-1
    bios[0xFFF0 : 0xFFF0 + len(code)] = code
    return bytes(bios)


def _cache_file() -> Path:
    root = os.environ.get("BAKER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "baker"
    )
    return Path(root) / "accel-probe.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(qemu_binary: str = "qemu-system-x86_64", timeout: float = 4.0) -> str | None:
    """None if KVM runs a guest here, else the reason it cannot."""
    dev = "/dev/kvm"
    if not os.path.exists(dev):
        return "/dev/kvm does not exist (no KVM module, or not passed into this container)"
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open /dev/kvm: {e.strerror} (add the user to the 'kvm' group)"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
    except OSError as e:
        return f"KVM_GET_API_VERSION failed: {e.strerror}"
    finally:
        os.close(fd)
    if version != 12:
        return f"unexpected KVM API version {version}"
    with tempfile.TemporaryDirectory(prefix="baker-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(_probe_firmware())
        argv = [qemu_binary, "-accel", "kvm", "-machine", "pc", "-nodefaults", "-display", "none",
                "-bios", str(bios), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"]
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"a test guest under KVM did not finish within {timeout:.0f}s (KVM hangs on this host)"
        except FileNotFoundError:
            return f"{qemu_binary} not found"
        if proc.returncode != _PROBE_EXIT:
            err = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            return f"a test guest under KVM failed: {err[0]}"
        log.debug("KVM probe passed in %.2fs", time.monotonic() - start)
    return None


def kvm_problem(qemu_binary: str) -> str | None:
    """Probe once per host boot; `mark_kvm_broken` records failures seen later in a real boot."""
    cache = _cache_file()
    key = f"{_boot_id()}:{qemu_binary}"
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        data = {}
    if key in data:
        return data[key] or None
    problem = probe_kvm(qemu_binary)
    _store(key, problem or "")
    return problem


def mark_kvm_broken(qemu_binary: str, reason: str) -> None:
    _store(f"{_boot_id()}:{qemu_binary}", reason)


def _store(key: str, value: str) -> None:
    cache = _cache_file()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(cache.read_text())
        except (OSError, ValueError):
            data = {}
        data[key] = value
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, cache)
    except OSError as e:  # a read-only cache must not break builds
        log.debug("cannot record accelerator probe: %s", e)


def choose_accelerator(requested: str, qemu_binary: str = "qemu-system-x86_64") -> AccelChoice:
    """auto → KVM if it really runs guests, else TCG with a reason; kvm → fail fast if it cannot."""
    if os.environ.get("BAKER_ACCEL"):  # an operator's override, e.g. on hosts with flaky KVM
        requested = os.environ["BAKER_ACCEL"]
    if requested == "tcg":
        return AccelChoice("tcg", requested)
    problem = kvm_problem(qemu_binary)
    if problem is None:
        return AccelChoice("kvm", requested)
    if requested == "kvm":
        raise BakerError(
            f"accelerator 'kvm' requested but KVM is not usable: {problem}",
            hint="set machine.accelerator: auto (falls back to TCG, much slower) or tcg",
        )
    return AccelChoice("tcg", requested, problem)
