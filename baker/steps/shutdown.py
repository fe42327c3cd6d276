"""Generalize and power off cleanly, so the disk is complete and carries no build credentials."""

from __future__ import annotations

import time

from baker.errors import BakerError
from baker.state import BuildState
from baker.units import parse_duration


def _wait_poweroff(machine, timeout: float) -> bool:
    """Wait for QEMU to exit; a guest that panics or pauses on its way down fails the build now."""
    deadline = time.monotonic() + timeout
    while not machine.wait_exit(min(0.5, max(0.0, deadline - time.monotonic()))):
        g = machine.gone()
        if g is not None and g.state != "shutdown":
            raise BakerError(f"the guest stopped while shutting down: {g.reason}",
                             hint=g.hint or "see the serial console tail")
        if time.monotonic() >= deadline:
            return False
    return True


class ShutDown:
    name = "shutdown"

    def run(self, s: BuildState) -> None:
        t = s.template
        machine = s.machine
        timeout = parse_duration(t.shutdown.timeout)
        comm = s.comm
        if comm is not None:
            for what, undo in s.before_shutdown:
                if comm.run(undo, timeout=120, stdout_cb=s.log.debug, stderr_cb=s.log.info) != 0:
                    raise BakerError(f"could not {what} in the guest",
                                     hint="it must not reach the image; see the output above")
            comm.run("sync", timeout=120)
            command = t.shutdown.command
            if t.generalize.enabled:
                from baker.provision.generalize import generalize_command

                command = generalize_command(t.generalize, t.communicator.ssh_username,
                                             poweroff_command=command or "poweroff")
                s.log.info("generalizing the guest (build user, keys, machine-id, logs) and powering off")
            if command:
                machine.expect_exit()
                self._run_disconnecting(s, command)
            else:
                machine.powerdown()
        elif t.shutdown.command is None:
            s.log.info("communicator none: waiting up to %.0fs for the guest to power off", timeout)
        else:
            machine.powerdown()
        if not _wait_poweroff(machine, timeout):
            if comm is None and t.shutdown.command is None:
                raise BakerError(f"the guest did not power off within {timeout:.0f}s",
                                 hint="raise shutdown.timeout, or check the serial log")
            s.log.warning("guest still running after %.0fs; stopping QEMU (block caches are flushed)",
                          timeout)
        machine.stop()
        if s.comm is not None:
            s.comm.close()
            s.comm = None

    def _run_disconnecting(self, s: BuildState, command: str) -> None:
        from baker.communicator.ssh import GuestGone, SSHDisconnected

        try:
            rc = s.comm.run(command, timeout=parse_duration(s.template.shutdown.timeout))
        except SSHDisconnected:
            return  # the guest went down under us: that is the point
        except GuestGone:
            # QEMU may exit before the SSH session notices; a clean exit is the point too
            if s.machine.wait_exit(5) and s.machine.proc is not None and s.machine.proc.returncode == 0:
                return
            raise
        if rc not in (0, -1, 255):
            raise BakerError(f"shutdown command exited with {rc}",
                             hint="see the output above; the shutdown command must power the guest off")

    def cleanup(self, s: BuildState) -> None:
        pass  # StartMachine's cleanup makes sure QEMU is gone
