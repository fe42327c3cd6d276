"""Test helpers: a tiny bootable GRUB ISO that waits at a menu, and a bare QEMU with QMP.

The ISO reads the PS/2 keyboard (`terminal_input console`) and writes to serial and screen, so
keys sent with QMP input events show up in the serial log. Typing `c` opens the GRUB shell.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from baker.proc import run

MENU_TITLE = "baker-test-menu"
GRUB_CFG = f"""\
serial --unit=0 --speed=115200
terminal_input console
terminal_output serial console
set timeout=-1
set timeout_style=menu
set pager=0
echo BAKER-GRUB-READY
menuentry "{MENU_TITLE}" {{
    echo BAKER-ENTRY-BOOTED
    sleep 3600
}}
"""


def _die_with_parent() -> None:
    """Runs in the child: QEMU gets SIGKILL if the test process dies without cleaning up."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def have_grub_mkrescue() -> bool:
    return all(shutil.which(t) for t in ("grub-mkrescue", "xorriso", "mformat")) and (
        Path("/usr/lib/grub/i386-pc").is_dir()
    )


def make_test_boot_iso(dest: str | os.PathLike[str]) -> Path:
    """Build the test ISO (BIOS, plus UEFI when grub-efi-amd64-bin is installed)."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="baker-testiso-") as tmp:
        root = Path(tmp) / "root"
        (root / "boot" / "grub").mkdir(parents=True)
        (root / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
        dest.parent.mkdir(parents=True, exist_ok=True)
        run(["grub-mkrescue", "--fonts=", "--locales=", "--themes=", "-o", dest, root,
             "--", "-volid", "BAKERTEST"],
            hint="apt-get install grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools")
    return dest


class Qemu:
    """A bare QEMU (TCG, no display) with a QMP socket; the test owns its lifetime."""

    def __init__(self, work: Path, args: Sequence[str], *, memory: int = 256, machine: str = "pc"):
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self.work = work
        self.serial_log = work / "serial.log"
        self.qmp_path = work / "qmp.sock"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", machine, "-m", str(memory),
            "-display", "none", "-monitor", "none", "-parallel", "none",
            "-serial", f"file:{self.serial_log}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *args,
        ]
        self.stderr = open(work / "qemu.stderr", "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while not self.qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"QEMU did not start: {(work / 'qemu.stderr').read_text()}")
            time.sleep(0.05)
        self.qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self.qmp.connect()

    def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return self.qmp.cmd(cmd, **(args or {}))

    def wait_serial(self, text: str, timeout: float) -> float:
        """Seconds since start until `text` is in the serial log; raises with the log on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serial_log.exists() and text in self.serial_log.read_text(errors="replace"):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        log = self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""
        raise AssertionError(f"{text!r} not on serial after {timeout}s; serial tail:\n{log[-2000:]}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "qmp", None) is not None:
                self.qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.stderr.close()


@contextlib.contextmanager
def qemu(work: Path, args: Sequence[str], **kw: Any) -> Iterator[Qemu]:
    vm = Qemu(work, args, **kw)
    try:
        yield vm
    finally:
        vm.stop()
