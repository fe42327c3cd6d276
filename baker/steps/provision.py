"""One step per provisioner, so a failure names it: `provision[2] shell (install nginx)`."""

from __future__ import annotations

import time

from baker.errors import BakerError
from baker.httpserver import GUEST_HOST_IP
from baker.state import BuildState
from baker.units import parse_duration

#: after a provisioner fails, how long to wait for QEMU to say whether the guest itself stopped
#: (a poweroff drops SSH a second or two before QEMU reports the SHUTDOWN)
GUEST_VERDICT_SECONDS = 5.0


class Provision:
    def __init__(self, index: int, provisioner) -> None:
        from baker.provision.base import summary

        self.index = index
        self.p = provisioner
        label = provisioner.name or summary(provisioner, first_line=True)
        self.name = f"provision[{index}] {provisioner.type}" + (f" ({label})" if label else "")

    def run(self, s: BuildState) -> None:
        from baker.provision import run_provisioner
        from baker.provision.base import ProvisionContext

        assert s.work_dir is not None
        if s.checkpoint is not None and s.checkpoint.skips(self.index):
            s.log.info("%s: in the checkpoint, not run again", self.name)
            return
        ctx = ProvisionContext(
            comm=s.comm, log=s.log, template_dir=s.template.path.parent, work_dir=s.work_dir,
            build_env={"BAKER_BUILD_NAME": s.template.name,
                       **({"BAKER_HTTP_ADDR": f"{GUEST_HOST_IP}:{s.http.port}"} if s.http else {})},
            reconnect_timeout=parse_duration(s.template.communicator.ssh_timeout), cancel=s.cancel,
        )
        try:
            run_provisioner(self.p, ctx, index=self.index)
        except BakerError as e:
            why = _guest_verdict(s, wait=_is_disconnect(e))
            if why is None or "the VM stopped" in str(e):
                raise
            raise BakerError(f"the VM stopped while this provisioner ran: {why}",
                             hint="see the serial console tail for why it stopped") from e

    def cleanup(self, s: BuildState) -> None:
        pass


def _is_disconnect(e: BaseException) -> bool:
    from baker.communicator.ssh import SSHDisconnected

    while e is not None:
        if isinstance(e, SSHDisconnected):
            return True
        e = e.__cause__ or e.__context__
    return False


def _guest_verdict(s: BuildState, *, wait: bool) -> str | None:
    """Why the guest stopped, if it did: a dropped SSH session is usually the symptom, not the cause."""
    machine = s.machine
    if machine is None:
        return None
    deadline = time.monotonic() + (GUEST_VERDICT_SECONDS if wait else 0)
    while (why := machine.alive()) is None and time.monotonic() < deadline:
        time.sleep(0.25)
    return why
