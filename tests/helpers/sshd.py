"""A real sshd on 127.0.0.1 for communicator and provisioner tests, and a stand-in for QEMU's hostfwd."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from baker.communicator.ssh import SSHCommunicator
from baker.keys import BuildKeys, generate_build_keys

SSHD = "/usr/sbin/sshd"
needs_sshd = pytest.mark.skipif(
    not os.path.exists(SSHD) or os.geteuid() != 0,
    reason="needs root and openssh-server (apt-get install openssh-server)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalSSHD:
    dir: Path
    port: int
    keys: BuildKeys
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def start(self) -> None:
        host_key = self.dir / "host_ed25519"
        host_key.write_text(self.keys.host_private_pem)
        os.chmod(host_key, 0o600)
        (self.dir / "authorized_keys").write_text(self.keys.client_public + "\n")
        conf = self.dir / "sshd_config"
        conf.write_text(
            f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
            f"PidFile {self.dir}/sshd.pid\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\nMaxStartups 100\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as sshd
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(conf), "-p", str(self.port), "-o", "ListenAddress=127.0.0.1",
             "-h", str(host_key)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + self.log_path.read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def communicator(self, **kw) -> SSHCommunicator:
        args = dict(host="127.0.0.1", port=self.port, username="root", key_path=self.keys.client_private_path,
                    host_public=self.keys.host_public, log=logging.getLogger("test.ssh"))
        args.update(kw)
        return SSHCommunicator(**args)


@contextlib.contextmanager
def local_sshd(tmp: Path) -> Iterator[LocalSSHD]:
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o700)
    server = LocalSSHD(dir=tmp, port=free_port(), keys=generate_build_keys(tmp / "keys"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class FakeSlirp:
    """Accepts TCP and closes it at once, like QEMU's hostfwd while the guest is still booting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
