"""In the guest, after provisioning: the package inventory (SBOM)."""

from __future__ import annotations

from baker.fsutil import atomic_write
from baker.state import BuildState


class InventoryPackages:
    name = "sbom"

    def run(self, s: BuildState) -> None:
        from baker.sbom import SBOM_FILE
        from baker.sbom.cyclonedx import to_cyclonedx
        from baker.sbom.inventory import read_guest

        assert s.staging_dir is not None
        inv = read_guest(lambda cmd, **kw: s.comm.run(cmd, timeout=300, **kw))
        sbom = to_cyclonedx(inv, name=s.template.name, version=s.template.version)
        atomic_write(s.staging_dir / SBOM_FILE, sbom)
        s.log.info("SBOM: %d packages (%s) in %s", len(inv.packages), inv.os_name or inv.distro, SBOM_FILE)

    def cleanup(self, s: BuildState) -> None:
        pass
