"""A real QEMU process: started paused, ports read back over QMP, death noticed at once, never orphaned."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from baker.errors import BakerError
from baker.machine.accel import choose_accelerator
from baker.machine.qemu import Machine, MachineSpec

pytestmark = pytest.mark.skipif(not Path("/usr/bin/qemu-system-x86_64").exists(), reason="needs QEMU")


@pytest.fixture
def machine(tmp_path: Path):
    m = Machine(MachineSpec(name="live", work_dir=tmp_path, memory_mb=128, cpus=1))
    m.start()
    yield m
    m.stop()


def _non_loopback_ipv4() -> str | None:
    """An address of this host's own interfaces other than loopback (read, not probed)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=False).stdout
    for line in out.splitlines():
        ip = line.split()[3].split("/")[0]
        if not ip.startswith("127."):
            return ip
    return None


def test_forwarded_port_answers_on_loopback_only(machine: Machine):
    port = machine.host_ports[22]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    ip = _non_loopback_ipv4()
    if ip is None:
        pytest.skip("no non-loopback address to test against")
    with pytest.raises(OSError), socket.create_connection((ip, port), timeout=2):
        pass


def test_two_machines_get_different_ports(machine: Machine, tmp_path: Path):
    other = Machine(MachineSpec(name="live2", work_dir=tmp_path / "b", memory_mb=128, cpus=1))
    other.start()
    try:
        assert other.host_ports[22] != machine.host_ports[22]
    finally:
        other.stop()


def test_kill_9_is_noticed_immediately(machine: Machine):
    assert machine.alive() is None
    os.kill(machine.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while machine.alive() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "SIGKILL" in (machine.alive() or "")


def test_stop_is_idempotent(machine: Machine):
    machine.stop()
    machine.stop()
    assert machine.alive() is not None


def test_screendump_writes_a_png(machine: Machine, tmp_path: Path):
    path = machine.screendump(tmp_path / "screen.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_qemu_argument_fails_with_stderr(tmp_path: Path):
    m = Machine(MachineSpec(name="bad", work_dir=tmp_path, extra_args=["-no-such-option"]))
    with pytest.raises(BakerError, match="no-such-option"):
        m.start()


ORPHAN_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from baker.machine.qemu import Machine, MachineSpec
    m = Machine(MachineSpec(name="orphan", work_dir=Path(sys.argv[1]), memory_mb=128, cpus=1))
    m.start()
    print(m.pid, flush=True)
    time.sleep(120)
""")


def test_qemu_dies_with_a_sigkilled_parent(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[1])
    qemu_pid = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(qemu_pid, 0)
        except ProcessLookupError:
            return
        # reap if it became our zombie (it is our grandchild, so normally init reaps it)
        time.sleep(0.1)
    pytest.fail(f"QEMU {qemu_pid} outlived its parent")


def test_tcg_requested_never_probes(monkeypatch):
    monkeypatch.delenv("BAKER_ACCEL", raising=False)
    assert choose_accelerator("tcg").accel == "tcg"


def test_kvm_requested_on_a_host_without_it_fails_fast(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("BAKER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BAKER_ACCEL", raising=False)
    import baker.machine.accel as accel

    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: "/dev/kvm does not exist")
    with pytest.raises(BakerError, match="KVM is not usable"):
        choose_accelerator("kvm")
    choice = choose_accelerator("auto")
    assert choice.accel == "tcg" and choice.fell_back and "does not exist" in choice.reason


def test_real_probe_answers_within_seconds(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("BAKER_CACHE_DIR", str(tmp_path))
    from baker.machine.accel import probe_kvm

    start = time.monotonic()
    probe_kvm(timeout=4)
    assert time.monotonic() - start < 10
