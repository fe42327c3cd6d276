"""Start QEMU (with a KVM watchdog that falls back to TCG) and type the boot command."""

from __future__ import annotations

import time

from baker.errors import BakerError
from baker.machine.accel import choose_accelerator, mark_kvm_broken
from baker.machine.qemu import Drive, Machine, MachineSpec
from baker.pipeline import register_pid, unregister_pid
from baker.proc import run
from baker.state import BuildState
from baker.units import parse_duration

# A guest under a working KVM prints on the serial console within a few seconds; on hosts where
# /dev/kvm opens but guests hang (nested virt gone wrong), nothing ever appears.
KVM_WATCHDOG_SECONDS = 20.0


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
        choice = choose_accelerator(m.accelerator, m.qemu_binary)
        if choice.fell_back:
            s.log.warning("KVM is not usable (%s); falling back to TCG software emulation, which is "
                          "10-50x slower. Set machine.accelerator: tcg to silence this.", choice.reason)
        s.accel = choice
        s.qemu_version = run([m.qemu_binary, "--version"]).stdout.splitlines()[0]
        self._start(s, choice.accel)
        if choice.accel == "kvm" and choice.requested == "auto" and not self._kvm_alive(s):
            reason = f"the guest printed nothing on its serial console within {KVM_WATCHDOG_SECONDS:.0f}s"
            s.log.warning("KVM guest appears hung (%s); restarting under TCG", reason)
            mark_kvm_broken(m.qemu_binary, reason)
            self.cleanup(s)
            s.accel = type(choice)("tcg", "auto", reason)
            self._start(s, "tcg")

    def _start(self, s: BuildState, accel: str) -> None:
        machine = Machine(machine_spec(s, accel))
        s.machine = machine
        machine.start()
        if machine.pid:
            register_pid(machine.pid)
        s.log.info("QEMU running (pid %s, %s); serial console: %s; SSH forwarded from 127.0.0.1:%s",
                   machine.pid, accel, machine.spec.serial_log,
                   machine.host_ports.get(s.template.communicator.ssh_port, "-"))

    def _kvm_alive(self, s: BuildState) -> bool:
        deadline = time.monotonic() + KVM_WATCHDOG_SECONDS
        serial = s.machine.spec.serial_log
        while time.monotonic() < deadline:
            if s.machine.alive() is not None:
                return True  # it died; WaitForSSH reports that with the real reason
            if serial.stat().st_size > 0:
                return True
            time.sleep(0.5)
        return False

    def cleanup(self, s: BuildState) -> None:
        if s.machine is not None:
            pid = s.machine.pid
            s.machine.stop()
            if pid:
                unregister_pid(pid)


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
            if machine.proc is not None and machine.proc.poll() == 0:
                # the guest powered itself off cleanly (e.g. the command ends an install): not a failure
                s.log.info("the guest powered off during boot_command; the remaining keys were not needed")
                machine.expect_exit()
                return
            raise

    def cleanup(self, s: BuildState) -> None:
        pass
