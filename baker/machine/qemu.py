"""One QEMU process: a deterministic argv, started paused, supervised, controlled over QMP.

Why paused: QEMU binds the SSH forward on port 0 itself and we read the port back over QMP before the
guest runs, so parallel builds never race for ports. Why PR_SET_PDEATHSIG: no QEMU outlives baker,
even when baker is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from baker.errors import BakerError
from baker.fsutil import read_end
from baker.machine import registry
from baker.machine.health import Gone, HealthMonitor
from baker.proc import spawn

log = logging.getLogger("baker.machine")

_PR_SET_PDEATHSIG = 1


@dataclass
class Drive:
    path: Path
    format: str = "qcow2"
    # "cdrom": an IDE/AHCI CD-ROM (installers boot from it); "virtio-ro": a read-only virtio disk, for
    # seeds on cloud kernels, which often lack AHCI and sr_mod (cloud-init finds the seed by label)
    media: str = "disk"
    readonly: bool = False


@dataclass
class MachineSpec:
    """Everything the command line depends on; built by the pipeline from the template."""

    name: str
    work_dir: Path
    accel: str = "tcg"
    qemu_binary: str = "qemu-system-x86_64"
    machine_type: str = "q35"
    cpus: int = 2
    memory_mb: int = 2048
    cpu_model: str | None = None
    disk: Drive | None = None
    disk_interface: str = "virtio"
    disk_cache: str = "unsafe"
    disk_discard: str = "unmap"
    cdroms: list[Drive] = field(default_factory=list)
    boot_from_cdrom: bool = False
    # firmware: pflash (code read-only, per-build vars) for UEFI; None for SeaBIOS
    pflash_code: Path | None = None
    pflash_vars: Path | None = None
    machine_flags: list[str] = field(default_factory=list)  # e.g. ["smm=on"] for secure boot
    firmware_args: list[str] = field(default_factory=list)
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    net_device: str = "virtio-net-pci"
    guest_ports: list[int] = field(default_factory=lambda: [22])  # forwarded from 127.0.0.1:<ephemeral>
    extra_args: list[str] = field(default_factory=list)

    @property
    def serial_log(self) -> Path:
        return self.work_dir / "serial.log"

    @property
    def qmp_socket(self) -> Path:
        return self.work_dir / "qmp.sock"

    @property
    def stderr_log(self) -> Path:
        return self.work_dir / "qemu-stderr.log"

    @property
    def events_socket(self) -> Path:
        """A second QMP monitor, only for the health monitor: it never queues behind other commands."""
        return self.work_dir / "qmp-events.sock"

    @property
    def firmware_log(self) -> Path:
        """SeaBIOS's debug console (port 0x402): shows progress before the bootloader prints."""
        return self.work_dir / "firmware.log"


def build_argv(spec: MachineSpec) -> list[str]:
    """The exact argv, in a fixed order; template `qemuargs` are appended, never replacing ours."""
    machine = ",".join([f"type={spec.machine_type}", f"accel={spec.accel}", *spec.machine_flags])
    argv = [
        spec.qemu_binary, "-name", f"baker-{spec.name},process=baker-{spec.name}",
        "-machine", machine,
        "-m", f"{spec.memory_mb}M",
        "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "std",
        "-S",
        # relative to the work dir (QEMU runs there): a socket path is limited to 107 bytes, a
        # TMPDIR is not
        "-qmp", f"unix:{spec.qmp_socket.name},server=on,wait=off",
        "-qmp", f"unix:{spec.events_socket.name},server=on,wait=off",
        "-chardev", f"file,id=serial0,path={spec.serial_log}",
        "-serial", "chardev:serial0",
        "-device", "virtio-rng-pci",
        # a kernel panic becomes a GUEST_PANICKED event, and the guest stays paused for a screenshot
        "-device", "pvpanic", "-action", "panic=pause",
    ]
    if spec.pflash_code is None:
        argv += ["-chardev", f"file,id=fwlog,path={spec.firmware_log}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]
    if spec.cpu_model:
        argv += ["-cpu", spec.cpu_model]
    if spec.pflash_code:
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={spec.pflash_code}"]
        if spec.pflash_vars:
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={spec.pflash_vars}"]
    argv += spec.firmware_args
    fwds = ",".join(f"hostfwd=tcp:127.0.0.1:0-:{p}" for p in spec.guest_ports)
    argv += ["-netdev", "user,id=net0" + (f",{fwds}" if fwds else ""),
             "-device", f"{spec.net_device},netdev=net0"]
    boot_index = 1
    if spec.disk_interface == "virtio-scsi":
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    if spec.disk is not None:
        d = spec.disk
        argv += ["-drive", f"file={d.path},format={d.format},if=none,id=disk0,cache={spec.disk_cache},"
                           f"discard={spec.disk_discard},detect-zeroes="
                           f"{'unmap' if spec.disk_discard == 'unmap' else 'off'}"]
        argv += ["-device", _disk_device(spec.disk_interface, "disk0", _disk_bootindex(spec))]
    for i, cd in enumerate(spec.cdroms):
        if cd.media == "virtio-ro":
            argv += ["-drive", f"file={cd.path},format={cd.format},if=none,id=cd{i},readonly=on",
                     "-device", f"virtio-blk-pci,drive=cd{i}"]
            continue
        argv += ["-drive", f"file={cd.path},format=raw,if=none,id=cd{i},media=cdrom,readonly=on"]
        idx = f",bootindex={boot_index}" if _cd_bootindex(spec) and i == 0 else ""
        if spec.machine_type.startswith("pc") and not spec.machine_type.startswith("pc-q35"):
            argv += ["-device", f"ide-cd,drive=cd{i},bus=ide.{i // 2},unit={i % 2}{idx}"]
        else:
            argv += ["-device", f"ide-cd,drive=cd{i}{idx}"]
    if spec.boot_from_cdrom and spec.pflash_code is None:
        argv += ["-boot", "order=c,once=d"]  # SeaBIOS: CD for the install, the disk once it reboots
    if spec.kernel:
        argv += ["-kernel", str(spec.kernel)]
        if spec.initrd:
            argv += ["-initrd", str(spec.initrd)]
        if spec.append:
            argv += ["-append", spec.append]
    argv += spec.extra_args
    return argv


def _cd_bootindex(spec: MachineSpec) -> bool:
    """UEFI has no `-boot once`; there the CD goes first and the installer's NVRAM entry wins later."""
    return spec.boot_from_cdrom and spec.pflash_code is not None


def _disk_bootindex(spec: MachineSpec) -> int | None:
    if spec.boot_from_cdrom:
        return 2 if spec.pflash_code is not None else None
    return 1


def _disk_device(interface: str, drive: str, bootindex: int | None) -> str:
    idx = f",bootindex={bootindex}" if bootindex is not None else ""
    return _disk_device_base(interface, drive) + idx


def _disk_device_base(interface: str, drive: str) -> str:
    if interface == "virtio":
        return f"virtio-blk-pci,drive={drive}"
    if interface == "virtio-scsi":
        return f"scsi-hd,drive={drive},bus=scsi0.0"
    return f"ide-hd,drive={drive}"


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgrp()  # Ctrl-C in the terminal goes to baker only; baker decides how QEMU stops


class Machine:
    """A running QEMU. Thread-safe QMP; `alive()` notices a dead QEMU or a stopped guest in seconds."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self.argv = build_argv(spec)
        self.proc: subprocess.Popen[bytes] | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._qmp_lock = threading.Lock()
        self.host_ports: dict[int, int] = {}
        self.health: HealthMonitor | None = None
        self._panic_words: str | None = None  # the kernel's panic line, once the serial log has it
        #: run with the Gone reason when the guest is found stopped (from the monitor's thread)
        self.on_gone: list[Callable[[Gone], None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, connect_timeout: float = 30.0) -> None:
        self.spec.work_dir.mkdir(parents=True, exist_ok=True)
        self.spec.serial_log.touch()
        log.info("starting QEMU: %s", " ".join(self.argv))
        stderr = open(self.spec.stderr_log, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = spawn(self.argv, stdout=stderr, stderr=stderr, preexec_fn=_set_pdeathsig,
                              cwd=self.spec.work_dir,
                              hint="install qemu-system-x86 (apt-get install qemu-system-x86)")
        finally:
            stderr.close()
        registry.register(self.proc.pid)
        self._connect_qmp(connect_timeout)
        self.host_ports = self._read_forwards()
        self.health = HealthMonitor(connect=self._connect_events, stderr_log=self.spec.stderr_log,
                                    is_running=lambda: self.proc is not None and self.proc.poll() is None,
                                    on_gone=self.on_gone)
        self.health.start()
        self.qmp("cont")

    def _connect_events(self) -> QEMUMonitorProtocol:
        mon = QEMUMonitorProtocol(_unix_socket(self.spec.events_socket))
        mon.connect()
        return mon

    def _connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if (why := self.alive()) is not None:
                raise BakerError(f"QEMU failed to start: {why}")
            if self.spec.qmp_socket.exists():
                mon = None
                try:
                    mon = QEMUMonitorProtocol(_unix_socket(self.spec.qmp_socket))
                    mon.connect()
                    self._qmp = mon
                    return
                except Exception as e:  # retried until the deadline
                    last = e
                    if mon is not None:
                        with contextlib.suppress(Exception):
                            mon.close()
            else:
                last = None
            if time.monotonic() > deadline:
                raise BakerError(f"QEMU's QMP socket did not answer within {timeout:.0f}s: {last}")
            time.sleep(0.05)

    def _read_forwards(self) -> dict[int, int]:
        table = self.qmp("human-monitor-command", **{"command-line": "info usernet"})
        ports: dict[int, int] = {}
        for m in re.finditer(r"TCP\[HOST_FORWARD\]\s+\d+\s+\S+\s+(\d+)\s+\S+\s+(\d+)", str(table)):
            ports[int(m.group(2))] = int(m.group(1))
        missing = [p for p in self.spec.guest_ports if p not in ports]
        if missing:
            raise BakerError(f"QEMU did not report host forwards for guest ports {missing}: {table!r}")
        return ports

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> str | None:
        """None while the guest can still make progress; otherwise why not, with QEMU's stderr tail."""
        if self.proc is None:
            return "QEMU was not started"
        rc = self.proc.poll()
        if rc is None:
            g = self.gone()
            if g is None:
                return None
            tail = self.stderr_tail(5)
            text = f"{g.reason} (QEMU pid {self.proc.pid} still running; stopped by baker)"
            return text + (f"\n{tail}" if tail else "") + (f"\n  hint: {g.hint}" if g.hint else "")
        sig = f" (killed by {signal.Signals(-rc).name})" if rc < 0 else ""
        tail = self.stderr_tail(5)
        g = self.gone()
        why = f" after: {g.reason}" if g is not None else ""
        return f"QEMU exited with code {rc}{sig}{why}" + (f": {tail}" if tail else "")

    def gone(self) -> Gone | None:
        """Why the guest stopped while QEMU still runs (internal-error, panic, io-error, ...), or None."""
        g = self.health.check_now() if self.health is not None else None
        if g is not None and g.state == "guest-panicked" and "Kernel panic" not in g.reason:
            if self._panic_words is None:  # read the log once the panic is there, not on every call
                lines = _tail(self.spec.serial_log, 400).splitlines()
                panic = [line for line in lines if "Kernel panic" in line]
                # the kernel's own words sit above the stack dump the serial tail shows
                self._panic_words = panic[-1].split("] ", 1)[-1].strip() if panic else None
            if self._panic_words:
                g = Gone(f"{g.reason}: {self._panic_words}", g.state, g.hint, g.kvm_failure)
        return g

    def qmp(self, command: str, **args: Any) -> Any:
        """Run a QMP command; a QEMU that went away mid-command becomes a BakerError saying why."""
        if self._qmp is None:
            raise BakerError("QMP is not connected")
        try:
            with self._qmp_lock:
                return self._qmp.cmd(command, **args)
        except (QMPError, OSError, EOFError) as e:
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            why = self.alive() or f"{type(e).__name__}: {e}"
            raise BakerError(f"QMP {command} failed: {why}") from e

    def powerdown(self) -> None:
        """ACPI power button: the guest shuts down cleanly if it listens (systemd-logind/acpid)."""
        self.expect_exit()
        self.qmp("system_powerdown")

    def expect_exit(self) -> None:
        """From now on the guest powering off is the plan, not a failure."""
        if self.health is not None:
            self.health.expect_exit()

    def wait_exit(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace: float = 5.0) -> None:
        """Make sure QEMU is gone: QMP quit, then SIGTERM, then SIGKILL. Safe to call twice."""
        self.expect_exit()
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self._qmp is not None:
                    with self._qmp_lock:
                        self._qmp.cmd("quit")
            except Exception:  # falls through to signals
                pass
            if not self.wait_exit(grace):
                self.proc.terminate()
                if not self.wait_exit(grace):
                    self.proc.kill()
                    self.proc.wait()
        if self.health is not None:
            self.health.stop()
        if self.proc is not None:
            registry.unregister(self.proc.pid)
        self._close_qmp()

    def _close_qmp(self) -> None:
        if self._qmp is not None:
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None

    def screendump(self, path: Path) -> Path | None:
        """PNG of the screen (QEMU ≥ 7.1 writes PNG); None if the VM cannot answer."""
        try:
            self.qmp("screendump", filename=str(path), format="png")
            return path
        except Exception as e:  # a screenshot must never mask the real error
            log.debug("screendump failed: %s", e)
            return None

    # -- logs -----------------------------------------------------------------------------------
    def serial_tail(self, lines: int = 30) -> str:
        return _tail(self.spec.serial_log, lines)

    def stderr_tail(self, lines: int = 10) -> str:
        return _tail(self.spec.stderr_log, lines)

    def firmware_tail(self, lines: int = 10) -> str:
        return _tail(self.spec.firmware_log, lines)


def _unix_socket(path: Path) -> socket.socket:
    """A connected socket to `path`, however long its directory's name (sun_path holds 107 bytes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dir_fd = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/{path.name}")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return sock


def _tail(path: Path, lines: int) -> str:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", read_end(path)).replace("\r", "")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
