"""Start QEMU (watching a KVM boot closely, falling back to TCG under `auto`) and type the boot command."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from baker.errors import BakerError
from baker.machine.accel import AccelChoice, choose_accelerator, mark_kvm_broken
from baker.machine.health import Gone
from baker.machine.qemu import Drive, Machine, MachineSpec
from baker.proc import run
from baker.state import BuildState
from baker.units import parse_duration

# How a KVM boot is judged before the build relies on it. Broken KVM shows up in three ways here:
# nothing at all on the serial console; the firmware starts (SeaBIOS's debug console) and then stalls;
# or the bootloader prints, the kernel starts and KVM stops it with an emulation failure. The first two
# are silences, the third is an event the health monitor reports; all end the trial within seconds.
KVM_NO_OUTPUT_SECONDS = 20.0  # no byte on the serial console by then: hung
KVM_STALL_SECONDS = 8.0  # firmware log and serial console both silent this long before the OS prints
KVM_SETTLE_SECONDS = 10.0  # the guest must keep running this long after its first serial output


@dataclass(frozen=True)
class TrialResult:
    ok: bool
    reason: str = ""
    seconds: float = 0.0


def judge_kvm_boot(machine: Machine, *, no_output: float = KVM_NO_OUTPUT_SECONDS,
                   stall: float = KVM_STALL_SECONDS, settle: float = KVM_SETTLE_SECONDS,
                   tick: float = 0.25) -> TrialResult:
    """Watch a fresh KVM boot until it has clearly got past where broken KVM stops guests."""
    started = time.monotonic()
    serial, firmware = machine.spec.serial_log, machine.spec.firmware_log
    last_sizes = (-1, -1)
    last_change = started
    first_output: float | None = None
    while True:
        now = time.monotonic()
        if machine.proc is not None and machine.proc.poll() is not None:
            return TrialResult(True, seconds=now - started)  # it died: the next step reports why
        g = machine.gone()
        if g is not None:
            if g.kvm_failure:
                return TrialResult(False, g.reason, now - started)
            return TrialResult(True, seconds=now - started)  # a real guest problem, not KVM's
        sizes = (_size(serial), _size(firmware))
        if sizes != last_sizes:
            last_sizes, last_change = sizes, now
        if first_output is None and sizes[0] > 0:
            first_output = now
        if first_output is not None:
            if now - first_output >= settle:
                return TrialResult(True, seconds=now - started)
        elif now - started >= no_output:
            return TrialResult(False, f"the guest printed nothing on its serial console within "
                                      f"{no_output:.0f}s", now - started)
        elif sizes[1] > 0 and now - last_change >= stall:
            return TrialResult(False, f"the guest stopped making progress: nothing on the serial console, "
                                      f"firmware silent for {stall:.0f}s after "
                                      f"'{machine.firmware_tail(1) or '-'}'", now - started)
        time.sleep(tick)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def machine_spec(s: BuildState, accel: str) -> MachineSpec:
    t = s.template
    m = t.machine
    assert s.work_dir is not None and s.disk is not None
    spec = MachineSpec(
        name=t.name, work_dir=s.work_dir, accel=accel, qemu_binary=m.qemu_binary,
        machine_type=m.machine_type, cpus=m.cpus, memory_mb=m.memory, cpu_model=m.cpu_model,
        disk=Drive(s.disk, "qcow2"), disk_interface=m.disk_interface, disk_cache=m.disk_cache,
        disk_discard=m.disk_discard,
        cdroms=[Drive(p, "raw", "cdrom" if t.source.iso else "virtio-ro", True) for p in s.cdroms],
        boot_from_cdrom=t.source.iso is not None, net_device=m.net_device,
        guest_ports=[t.communicator.ssh_port] if t.communicator.type == "ssh" else [],
        extra_args=list(m.qemuargs),
    )
    if t.source.iso is not None and s.base_image is not None:
        spec.cdroms.insert(0, Drive(s.base_image, "raw", "cdrom", True))
    if m.firmware == "uefi":
        from baker.machine.firmware import find_firmware, prepare_vars

        fw = find_firmware("uefi", secure_boot=m.secure_boot, machine_type=m.machine_type)
        spec.pflash_code = fw.code
        spec.pflash_vars = prepare_vars(fw, s.work_dir)
        spec.machine_flags += list(fw.machine_flags)
        spec.firmware_args += list(fw.extra_args)
    src = t.source
    if src.kernel:
        from baker.template import render_late

        spec.kernel = t.path.parent / src.kernel
        spec.initrd = (t.path.parent / src.initrd) if src.initrd else None
        spec.append = render_late(src.append, t, s.build_vars()) if src.append else None
    return spec


class StartMachine:
    name = "start-vm"

    def run(self, s: BuildState) -> None:
        m = s.template.machine
        choice = choose_accelerator(s.options.accelerator or m.accelerator, m.qemu_binary)
        if choice.fell_back:
            s.log.warning("KVM is not usable (%s); falling back to TCG software emulation, which is "
                          "10-50x slower. Set machine.accelerator: tcg to silence this.", choice.reason)
        s.accel = choice
        s.qemu_version = run([m.qemu_binary, "--version"]).stdout.splitlines()[0]
        if choice.accel != "kvm":
            self._start(s, choice)
            return
        pristine = self._keep_pristine_disk(s)
        try:
            self._start(s, choice)
            trial = judge_kvm_boot(s.machine)
            if trial.ok:
                s.log.info("KVM boot looks healthy after %.1fs", trial.seconds)
                return
            reason = f"{trial.reason} ({trial.seconds:.1f}s after QEMU started)"
            mark_kvm_broken(m.qemu_binary, reason)
            if choice.requested == "kvm":
                raise BakerError(f"accelerator 'kvm' requested but KVM cannot run this guest: {reason}",
                                 hint="set machine.accelerator: auto (falls back to TCG) or tcg; "
                                      "`baker doctor` shows what this host can do")
            s.log.warning("KVM cannot run this guest (%s); recorded for this host boot, restarting under "
                          "TCG software emulation", reason)
            self.cleanup(s)
            if pristine is not None and s.disk is not None:
                pristine.replace(s.disk)  # the failed boot may have touched the disk
                pristine = None
            s.accel = AccelChoice("tcg", choice.requested, reason)
            self._start(s, s.accel)
        finally:
            if pristine is not None:
                pristine.unlink(missing_ok=True)

    def _keep_pristine_disk(self, s: BuildState) -> Path | None:
        """A copy of the build disk before a KVM try, so a TCG restart boots what KVM never touched."""
        if s.disk is None or not s.disk.exists():
            return None
        copy = s.disk.with_name(s.disk.name + ".pristine")
        shutil.copyfile(s.disk, copy)  # an overlay or an empty disk: small
        return copy

    def _start(self, s: BuildState, choice: AccelChoice) -> None:
        machine = Machine(machine_spec(s, choice.accel))
        if choice.accel == "kvm" and choice.requested == "auto":
            qemu_binary = s.template.machine.qemu_binary

            def record_kvm_failure(g: Gone) -> None:
                if g.kvm_failure:  # later than the trial: the next build on this host falls back at once
                    mark_kvm_broken(qemu_binary, g.reason)

            machine.on_gone.append(record_kvm_failure)
        s.machine = machine
        machine.start()
        s.log.info("QEMU running (pid %s, %s); serial console: %s; SSH forwarded from 127.0.0.1:%s",
                   machine.pid, choice.accel, machine.spec.serial_log,
                   machine.host_ports.get(s.template.communicator.ssh_port, "-"))

    def cleanup(self, s: BuildState) -> None:
        if s.machine is not None:
            s.machine.stop()


class TypeBootCommand:
    name = "boot-command"

    def run(self, s: BuildState) -> None:
        from baker.boot.keys import parse_boot_command
        from baker.boot.typist import type_boot_command
        from baker.template import render_late

        src = s.template.source
        wait = parse_duration(src.boot_wait)
        if wait:
            s.log.info("waiting %.0fs (boot_wait) before typing", wait)
            if s.cancel.wait(wait):
                raise BakerError("cancelled")
        build = s.build_vars()
        lines = [render_late(line, s.template, build, path=f"source.boot_command[{i}]")
                 for i, line in enumerate(src.boot_command)]
        actions = parse_boot_command(lines)
        machine = s.machine

        def execute(cmd: str, args: dict | None = None):
            if (why := machine.alive()) is not None:
                raise BakerError(why)
            return machine.qmp(cmd, **(args or {}))

        try:
            type_boot_command(actions, execute, key_interval=parse_duration(src.boot_key_interval),
                              serial_log=machine.spec.serial_log, cancel=s.cancel, alive=machine.alive)
        except BakerError:
            g = machine.gone()
            if g is not None and g.state == "shutdown":
                machine.wait_exit(10)  # the SHUTDOWN event comes just before QEMU exits
            if machine.proc is not None and machine.proc.poll() == 0:
                # the guest powered itself off cleanly (e.g. the command ends an install): not a failure
                s.log.info("the guest powered off during boot_command; the remaining keys were not needed")
                machine.expect_exit()
                return
            raise

    def cleanup(self, s: BuildState) -> None:
        pass
