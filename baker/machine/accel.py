"""Choosing the accelerator without ever hanging on a broken /dev/kvm.

The probe runs a 64 KiB firmware whose reset vector writes to QEMU's isa-debug-exit port: a working
accelerator exits in milliseconds; a broken one fails to start or hangs and is killed after a few
seconds. A probe that only runs a reset vector is not a guest kernel, so a passing probe is only the
first check: the start-vm step watches the real boot too and records KVM as broken here when it fails
(`mark_kvm_broken`). Results are cached per host boot (boot_id): later builds pay nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from baker.errors import BakerError, CommandError
from baker.paths import cache_root
from baker.proc import run

log = logging.getLogger("baker.machine")

_KVM_GET_API_VERSION = 0xAE00
_PROBE_EXIT = (0x42 << 1) | 1  # isa-debug-exit turns a write of v into exit status (v << 1) | 1


ACCELERATORS = ("auto", "kvm", "tcg")


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


def cache_file() -> Path:
    """The per-host-boot record of what KVM did here; deleting it makes the next build probe again."""
    return cache_root() / "accel-probe.json"


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
            proc = run(argv, timeout=timeout, check=False)
        except CommandError:  # only raised here for the timeout
            return f"a test guest under KVM did not finish within {timeout:.0f}s (KVM hangs on this host)"
        except BakerError:
            return f"{qemu_binary} not found"
        if proc.returncode != _PROBE_EXIT:
            err = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            return f"a test guest under KVM failed: {err[0]}"
        log.debug("KVM probe passed in %.2fs", time.monotonic() - start)
    return None


def kvm_problem(qemu_binary: str) -> str | None:
    """Probe once per host boot; `mark_kvm_broken` records failures seen later in a real boot."""
    recorded = recorded_kvm_problem(qemu_binary)
    if recorded is not None:
        return recorded or None
    problem = probe_kvm(qemu_binary)
    record_kvm_probe(qemu_binary, problem)
    return problem


def record_kvm_probe(qemu_binary: str, problem: str | None) -> None:
    """Record a probe's verdict for this host boot: None = KVM ran the probe guest."""
    _store(_key(qemu_binary), problem or "")


def recorded_kvm_problem(qemu_binary: str) -> str | None:
    """What this host boot's record says: None if never probed, "" if KVM worked, else the reason."""
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    value = data.get(_key(qemu_binary))
    return value if isinstance(value, str) else None


def forget_kvm_results() -> bool:
    """Drop the record so the next build probes again (after fixing the host); True if one existed."""
    try:
        cache_file().unlink()
        return True
    except FileNotFoundError:
        return False


def _key(qemu_binary: str) -> str:
    return f"{_boot_id()}:{qemu_binary}"


def mark_kvm_broken(qemu_binary: str, reason: str) -> None:
    _store(_key(qemu_binary), reason)


def _store(key: str, value: str) -> None:
    cache = cache_file()
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
    override = os.environ.get("BAKER_ACCEL", "").strip()
    if override:  # an operator's override, e.g. on hosts with flaky KVM
        if override not in ACCELERATORS:
            raise BakerError(f"BAKER_ACCEL={override!r} is not an accelerator",
                             hint=f"use one of {', '.join(ACCELERATORS)}")
        requested = override
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
