"""One step per provisioner, so a failure names it: `provision[2] shell (install nginx)`."""

from __future__ import annotations

from baker.httpserver import GUEST_HOST_IP
from baker.state import BuildState
from baker.units import parse_duration


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
        ctx = ProvisionContext(
            comm=s.comm, log=s.log, template_dir=s.template.path.parent, work_dir=s.work_dir,
            build_env={"BAKER_BUILD_NAME": s.template.name,
                       **({"BAKER_HTTP_ADDR": f"{GUEST_HOST_IP}:{s.http.port}"} if s.http else {})},
            reconnect_timeout=parse_duration(s.template.communicator.ssh_timeout), cancel=s.cancel,
        )
        run_provisioner(self.p, ctx, index=self.index)

    def cleanup(self, s: BuildState) -> None:
        pass

