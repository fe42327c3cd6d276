"""The local sshd helper itself works: the communicator and provisioner tests stand on it."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.sshd import local_sshd, needs_sshd


@needs_sshd
def test_local_sshd_starts_and_accepts_the_build_key(tmp_path: Path) -> None:
    with local_sshd(tmp_path / "sshd") as server, server.communicator() as comm:
        comm.wait(20)
        assert comm.run("true") == 0
