"""Provisioners and generalize inside a real Debian 12 guest (TCG): the paths root-on-localhost can't reach.

Boot 1: the build user (non-root, sudo via cloud-init) runs shell/file provisioners, then generalize
powers the guest off. Boot 2 (same disk, new seed and user): nothing of the build user is left.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from baker.communicator.ssh import SSHCommunicator, SSHDisconnected
from baker.keys import BuildKeys, generate_build_keys
from baker.machine.qemu import Drive, Machine, MachineSpec
from baker.provision import ProvisionContext, run_provisioner
from baker.provision.generalize import generalize_command, shipped_script
from baker.seed import write_seed
from baker.template.model import CloudInitConfig, FileProvisioner, GeneralizeConfig, ShellProvisioner

pytestmark = pytest.mark.e2e
log = logging.getLogger("test.vm")


def boot(work: Path, disk: Path, name: str, username: str) -> tuple[Machine, SSHCommunicator, BuildKeys]:
    keys = generate_build_keys(work / f"keys-{name}")
    seed = write_seed(work / f"seed-{name}.iso", hostname=name, instance_id=f"{name}-{uuid.uuid4()}",
                      username=username, keys=keys, cloud_init=CloudInitConfig())
    (work / name).mkdir(exist_ok=True)
    machine = Machine(MachineSpec(name=name, work_dir=work / name, accel="tcg", memory_mb=1024, cpus=2,
                                  disk=Drive(disk), cdroms=[Drive(seed, "raw", "virtio-ro", True)],
                                  guest_ports=[22]))
    machine.start()
    comm = SSHCommunicator(port=machine.host_ports[22], username=username, key_path=keys.client_private_path,
                           host_public=keys.host_public, log=log)
    try:
        comm.wait(600, alive=machine.alive)
    except BaseException:
        machine.stop()
        raise
    return machine, comm, keys


def out(comm: SSHCommunicator, command: str) -> str:
    lines: list[str] = []
    rc = comm.run(command, timeout=120, stdout_cb=lines.append, stderr_cb=lines.append)
    assert rc == 0, f"{command}: rc {rc}\n" + "\n".join(lines)
    return "\n".join(lines)


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="baker-test-vm-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_build_user_provisioners_then_generalize(base_image: Path, work: Path) -> None:
    disk = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base_image.resolve()),
                    str(disk)], check=True)
    machine, comm, _keys = boot(work, disk, "build", "baker")
    tdir = work / "template"
    (tdir / "site" / "css").mkdir(parents=True)
    (tdir / "site" / "css" / "a.css").write_text("a{}")
    ctx = ProvisionContext(comm=comm, log=log, template_dir=tdir, work_dir=work,
                           build_env={"BAKER_BUILD_NAME": "vm"}, reconnect_timeout=600,
                           cancel=threading.Event(), index=0)
    try:
        first_machine_id = out(comm, "cat /etc/machine-id").strip()
        run_provisioner(ShellProvisioner(script=str(shipped_script("wait-cloud-init.sh"))), ctx)
        run_provisioner(ShellProvisioner(
            inline=['[ "$(id -u)" = 0 ]', '[ "$V" = "a \'b\' \\$c" ]',
                    'echo "$BAKER_BUILD_NAME" > /root/built'],
            environment={"V": "a 'b' $c"}), ctx)
        run_provisioner(ShellProvisioner(inline=['[ "$(id -un)" = baker ]'], sudo=False), ctx)
        run_provisioner(FileProvisioner(content="k=v\n", destination="/etc/baker-test/app.conf", mode="0640"),
                        ctx)
        assert out(comm, "sudo -n stat -c '%U:%G %a' /etc/baker-test/app.conf").strip() == "root:root 640"
        run_provisioner(FileProvisioner(source="site", destination="/opt"), ctx)
        assert out(comm, "stat -c %U /opt/site/css/a.css").strip() == "root"
        run_provisioner(FileProvisioner(source="site/", destination="/home/baker/mine"), ctx)
        assert out(comm, "stat -c %U /home/baker/mine/css/a.css").strip() == "baker"
        run_provisioner(FileProvisioner(source="/etc/shadow", destination="dl/", direction="download"), ctx)
        assert "root:" in (tdir / "dl" / "shadow").read_text()
        # reboot in the middle of a build
        run_provisioner(ShellProvisioner(inline=["reboot"], expect_disconnect=True), ctx)
        assert out(comm, "cat /root/built 2>/dev/null || sudo -n cat /root/built").strip() == "vm"

        machine.expect_exit()
        try:
            rc = comm.run(generalize_command(GeneralizeConfig(), "baker"), timeout=600)
            assert rc in (0, -1), f"generalize exited {rc}: {comm.last_output_tail}"
        except SSHDisconnected:
            pass
        assert machine.wait_exit(300), "generalize should power the guest off"
    finally:
        comm.close()
        machine.stop()

    machine, comm, _keys = boot(work, disk, "clone", "tester")
    try:
        host_key = comm._transport.get_remote_server_key() if comm._transport else None
        assert host_key is not None
        assert "baker" not in out(comm, "getent passwd | cut -d: -f1").split()
        assert out(comm, "ls /home").split() == ["tester"]
        assert "baker" not in out(comm, "sudo -n cat /etc/sudoers.d/* 2>/dev/null; true")
        assert "baker" not in out(comm, "sudo -n cat /root/.ssh/authorized_keys 2>/dev/null; true")
        assert out(comm, "cat /etc/machine-id").strip() not in ("", first_machine_id)
        assert "10-baker-hostkeys.conf" in out(comm, "ls /etc/systemd/system/ssh.service.d/")
        assert out(comm, "sudo -n cat /etc/baker-test/app.conf").strip() == "k=v"
    finally:
        comm.close()
        machine.stop()
