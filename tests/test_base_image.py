"""End-to-end: boot the project's own Debian 12 base image (scripts/build-base-image) under QEMU TCG.

The image comes from $BAKER_BASE_IMAGE, else from `scripts/build-base-image --print-path`; the tests
skip when it has not been built (`make base-image`). Each VM runs on a copy-on-write overlay with a
NoCloud seed ISO (label "cidata") and user networking forwarding a local port to the guest's sshd.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from baker.iso9660 import write_iso

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build-base-image"
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = float(os.environ.get("BAKER_E2E_BOOT_TIMEOUT", "300"))  # TCG on a busy CI runner
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
USER = "baker"


def _base_image() -> Path:
    env = os.environ.get("BAKER_BASE_IMAGE")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.skip(f"BAKER_BASE_IMAGE={env} does not exist")
        return path
    try:
        out = subprocess.run(
            [str(SCRIPT), "--print-path"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot ask {SCRIPT.name} for the image path: {exc}")
    path = Path(out)
    if not path.is_file():
        pytest.skip(f"base image not built ({path} missing): run `make base-image` or set BAKER_BASE_IMAGE")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_banner(port: int, timeout: float = 5.0) -> bytes | None:
    """The SSH identification line, or None. QEMU's hostfwd accepts before the guest listens,
    then drops the connection, so "connected" alone means nothing: wait for the banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    return data.splitlines()[0] if data.startswith(b"SSH-") else None


def _make_key():
    """An ed25519 key pair: (paramiko key, OpenSSH public line)."""
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    pub = priv.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), pub.decode() + " baker-e2e"


@dataclass
class VM:
    proc: subprocess.Popen
    port: int
    serial: Path
    started: float
    pkey: object
    banner: bytes = b""
    banner_after: float = 0.0

    def serial_text(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_banner(self, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"QEMU exited with {self.proc.returncode}; serial tail:\n{self.serial_text()[-3000:]}"
                )
            banner = _ssh_banner(self.port)
            if banner:
                self.banner, self.banner_after = banner, time.monotonic() - self.started
                return
            time.sleep(1)
        pytest.fail(f"no SSH banner after {timeout:.0f} s; serial tail:\n{self.serial_text()[-3000:]}")

    def wait_serial(self, pattern: str, timeout: float = BOOT_TIMEOUT) -> re.Match[str]:
        deadline = self.started + timeout
        while True:
            m = re.search(pattern, self.serial_text())
            if m:
                return m
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"{pattern!r} not on the serial console; tail:\n{self.serial_text()[-3000:]}")
            time.sleep(1)

    def ssh(self, command: str, timeout: float = 120) -> tuple[int, str]:
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        # sshd answers before cloud-init has created the user: retry auth for a while.
        deadline = time.monotonic() + 120
        while True:
            try:
                client.connect(
                    "127.0.0.1",
                    port=self.port,
                    username=USER,
                    pkey=self.pkey,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=20,
                    banner_timeout=60,
                    auth_timeout=30,
                )
                break
            except (paramiko.SSHException, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read().decode() + stderr.read().decode()
            return stdout.channel.recv_exit_status(), out
        finally:
            client.close()


@contextmanager
def _boot(tmp: Path, base: Path, *, uefi: bool = False, disk_size: str = "4G") -> Iterator[VM]:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} not installed")
    overlay = tmp / "overlay.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(base.resolve()),
            "-F",
            "qcow2",
            str(overlay),
            disk_size,
        ],
        check=True,
    )
    pkey, pub = _make_key()
    user_data = (
        "#cloud-config\n"
        "users:\n"
        f"  - name: {USER}\n"
        "    sudo: ALL=(ALL) NOPASSWD:ALL\n"
        "    shell: /bin/bash\n"
        f"    ssh_authorized_keys: [ '{pub}' ]\n"
    )
    meta_data = f"instance-id: iid-{uuid.uuid4().hex[:12]}\nlocal-hostname: baker-e2e\n"
    seed = write_iso(tmp / "seed.iso", {"user-data": user_data, "meta-data": meta_data}, label="cidata")
    port = _free_port()
    serial = tmp / "serial.log"
    cmd = [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        os.environ.get("BAKER_E2E_SMP", "2"),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial}",
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-drive",
        f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev",
        f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]
    if uefi:
        vars_copy = tmp / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        cmd += [
            "-machine",
            "q35",
            "-drive",
            f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,file={vars_copy}",
        ]
    with open(tmp / "qemu.log", "wb") as qlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
    vm = VM(proc=proc, port=port, serial=serial, started=time.monotonic(), pkey=pkey)
    try:
        yield vm
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module scope: resolved before conftest's autouse fixture points BAKER_CACHE_DIR at a temp dir.
    return _base_image()


@pytest.fixture(scope="module")
def bios_vm(tmp_path_factory: pytest.TempPathFactory, base: Path) -> Iterator[VM]:
    with _boot(tmp_path_factory.mktemp("bios"), base) as vm:
        yield vm


def test_bios_boot_reaches_ssh_banner(bios_vm: VM) -> None:
    bios_vm.wait_banner()
    assert bios_vm.banner.startswith(b"SSH-2.0-OpenSSH")
    print(f"BIOS: SSH banner {bios_vm.banner_after:.1f} s after QEMU start")


def test_serial_shows_kernel_and_cloud_init(bios_vm: VM) -> None:
    bios_vm.wait_serial(r"Linux version \S+-cloud-amd64")
    m = bios_vm.wait_serial(r"Cloud-init v\. \S+ finished at [^\n]*")
    assert "NoCloud" in m.group(0), m.group(0)


def test_ssh_login_cloud_init_done_and_root_grown(bios_vm: VM) -> None:
    bios_vm.wait_banner()
    rc, out = bios_vm.ssh("uname -r")
    assert rc == 0 and out.strip().endswith("-cloud-amd64"), out
    rc, out = bios_vm.ssh("cloud-init status --wait --long")
    assert rc == 0 and "status: done" in out, out
    assert "DataSourceNoCloud" in out, out
    # growpart + resize2fs grew the root to the 4 GiB overlay; identity is per instance.
    rc, out = bios_vm.ssh(
        "df -B1M --output=size / | tail -n1; cat /etc/machine-id; ls /etc/ssh/ssh_host_ed25519_key; "
        "sudo -n true && echo SUDO_OK; systemctl is-system-running --wait || true"
    )
    lines = out.split()
    assert rc == 0, out
    assert int(lines[0]) > 3000, f"root not grown: {out}"
    assert re.fullmatch(r"[0-9a-f]{32}", lines[1]), out
    assert "SUDO_OK" in out, out
    assert out.strip().endswith("running"), f"system not fully up (failed units?):\n{out}"


@pytest.mark.skipif(not (OVMF_CODE.exists() and OVMF_VARS.exists()), reason="ovmf not installed")
def test_uefi_boot_reaches_ssh_banner(tmp_path: Path, base: Path, bios_vm: VM) -> None:
    bios_vm.proc.terminate()  # one TCG guest at a time: the BIOS tests are done with it
    with _boot(tmp_path, base, uefi=True) as vm:
        vm.wait_banner()
        assert vm.banner.startswith(b"SSH-2.0-OpenSSH")
        print(f"UEFI: SSH banner {vm.banner_after:.1f} s after QEMU start")
        vm.wait_serial(r"Cloud-init v\. \S+ finished at")
