"""Boot a built image with a fresh seed and a test key, to check from inside what a build produced."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from baker.communicator.ssh import SSHCommunicator
from baker.keys import generate_build_keys
from baker.machine.qemu import Drive, Machine, MachineSpec
from baker.seed import write_seed
from baker.template.model import CloudInitConfig

log = logging.getLogger("tests.guest")


class BootedImage:
    """A throwaway overlay on `image`, booted under TCG; `.run(cmd)` returns (rc, output)."""

    def __init__(self, image: Path, *, guest_ports: list[int] | None = None, fmt: str = "qcow2",
                 username: str = "tester", memory_mb: int = 1024) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="baker-test-boot-"))
        overlay = self.dir / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image.resolve()),
                        str(overlay)], check=True)
        self.keys = generate_build_keys(self.dir)
        seed = write_seed(self.dir / "seed.iso", hostname="check", instance_id=f"check-{uuid.uuid4()}",
                          username=username, keys=self.keys, cloud_init=CloudInitConfig())
        self.machine = Machine(MachineSpec(
            name="check", work_dir=self.dir, accel="tcg", memory_mb=memory_mb, cpus=2,
            disk=Drive(overlay), cdroms=[Drive(seed, "raw", "virtio-ro", True)],
            guest_ports=[22, *(guest_ports or [])],
        ))
        self.username = username
        self.comm: SSHCommunicator | None = None

    def __enter__(self) -> BootedImage:
        try:
            self.machine.start()
            self.comm = SSHCommunicator(host="127.0.0.1", port=self.machine.host_ports[22],
                                        username=self.username, key_path=self.keys.client_private_path,
                                        host_public=self.keys.host_public, log=log)
            self.comm.wait(600, alive=self.machine.alive)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        lines: list[str] = []
        assert self.comm is not None
        rc = self.comm.run(command, timeout=timeout, stdout_cb=lines.append, stderr_cb=lines.append)
        return rc, "\n".join(lines)

    def close(self) -> None:
        if self.comm is not None:
            self.comm.close()
        self.machine.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_guest_file(image: Path, fmt: str, path: str, work: Path) -> bytes:
    """Read a file from the root filesystem of a disk image of any format, without booting it.

    Converts to sparse raw, finds the root (largest Linux) partition in the GPT/MBR table and reads
    the file with debugfs through a read-only loop device at the partition's offset.
    """
    import json as _json

    raw = work / f"{image.name}.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw)], check=True)
    table = _json.loads(subprocess.run(["sfdisk", "-J", str(raw)], check=True, capture_output=True,
                                       text=True).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    root = max(table["partitions"], key=lambda p: p["size"])
    loop = subprocess.run(["losetup", "-r", "-f", "--show", "-o", str(root["start"] * sector),
                           "--sizelimit", str(root["size"] * sector), str(raw)], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        out = subprocess.run(["debugfs", "-R", f"cat {path}", loop], check=True, capture_output=True)
        return out.stdout
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
        raw.unlink()
