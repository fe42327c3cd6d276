"""Wait for SSH: verified host key, fail at once if QEMU dies, screenshots while waiting if asked."""

from __future__ import annotations

import threading

from baker.state import BuildState
from baker.units import parse_duration


class WaitForSSH:
    name = "wait-ssh"

    def run(self, s: BuildState) -> None:
        from baker.communicator.ssh import SSHCommunicator

        c = s.template.communicator
        machine = s.machine
        host_public = None
        if c.host_key_check == "strict" and s.seed is not None:
            host_public = s.keys.host_public
        elif c.host_key_check == "strict":
            s.log.warning("host key cannot be pinned without a cloud-init seed; set "
                          "communicator.host_key_check: off to acknowledge (accepting any host key)")
        key_path = s.keys.client_private_path
        if c.ssh_private_key_file:
            key_path = s.template.path.parent / c.ssh_private_key_file
        comm = SSHCommunicator(
            host="127.0.0.1", port=machine.host_ports[c.ssh_port], username=c.ssh_username,
            key_path=key_path, host_public=host_public, password=c.ssh_password, log=s.log,
        )
        stop_dumps = threading.Event()
        interval = parse_duration(s.template.machine.screendump_interval)
        if interval > 0:
            threading.Thread(target=self._dumps, args=(s, interval, stop_dumps), daemon=True).start()
        timeout = parse_duration(c.ssh_timeout)
        s.log.info("waiting up to %.0fs for SSH on 127.0.0.1:%s", timeout, machine.host_ports[c.ssh_port])
        try:
            comm.wait(timeout, alive=machine.alive, handshake_attempts=c.ssh_handshake_attempts,
                      pause_before=parse_duration(c.pause_before_connecting))
        finally:
            stop_dumps.set()
        s.comm = comm
        # a guest that stops (panic, io-error, pause) unblocks any SSH or SFTP call at once
        machine.on_gone.append(lambda _gone: comm.close())

    def _dumps(self, s: BuildState, interval: float, stop: threading.Event) -> None:
        n = 0
        while not stop.wait(interval):
            n += 1
            s.machine.screendump(s.work_dir / f"screen-{n:03d}.png")

    def cleanup(self, s: BuildState) -> None:
        if s.comm is not None:
            s.comm.close()
            s.comm = None
