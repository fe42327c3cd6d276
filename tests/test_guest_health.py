"""The guest's run state: classification (pure), and a real QEMU whose guest is stopped under it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from baker.machine.health import GONE_STATES, classify_status, describe_event, kvm_failure_in
from baker.machine.qemu import Drive, Machine, MachineSpec
from baker.steps.machine import judge_kvm_boot
from tests.helpers.paths import ROOT

LOOKALIKE = ROOT / "tests" / "bin" / "qemu-broken-kvm"
KVM_DUMP = """KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000000
emulation failure
RAX=0000000000000000 RBX=ffff8a7c41a3c000 RCX=0000000000000000 RDX=0000000000000001
Code=48 8b 45 d0 48 8b 55 d8 <f0> 48 0f c7 0f 0f 94 c0 84 c0
"""

needs_qemu = pytest.mark.skipif(not Path("/usr/bin/qemu-system-x86_64").exists(), reason="needs QEMU")


# --- pure classification ---------------------------------------------------------------------------

@pytest.mark.parametrize("state", sorted(GONE_STATES))
def test_every_gone_state_is_reported_with_a_reason(state: str):
    g = classify_status(state)
    assert g is not None and g.state == state and g.reason
    assert g.kvm_failure == (state == "internal-error")


@pytest.mark.parametrize("state", ["running", "prelaunch", "inmigrate", "postmigrate", "restore-vm",
                                   "save-vm", "finish-migrate", ""])
def test_states_that_can_still_make_progress_are_not_gone(state: str):
    assert classify_status(state) is None


def test_io_error_carries_the_block_error_detail():
    detail = describe_event({"event": "BLOCK_IO_ERROR", "data": {
        "device": "", "node-name": "#block123", "operation": "write", "action": "stop",
        "nospace": True, "reason": "No space left on device"}})
    assert detail == "#block123 write error: No space left on device (no space left on the host)"
    g = classify_status("io-error", detail=detail)
    assert g is not None and "No space left on device" in g.reason and "free space" in (g.hint or "")


def test_kvm_emulation_failure_is_recognised_in_stderr():
    assert kvm_failure_in(KVM_DUMP) == "KVM internal error. Suberror: 1; emulation failure"
    assert kvm_failure_in("KVM: entry failed, hardware error 0x80000021") is not None
    assert kvm_failure_in("error: kvm run failed Bad address") is not None


def test_ordinary_qemu_warnings_are_not_kvm_failures():
    text = ("qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n"
            "qemu-system-x86_64: terminating on signal 15 from pid 42 (python3)\n")
    assert kvm_failure_in(text) is None


# --- a real QEMU ------------------------------------------------------------------------------------

@needs_qemu
def test_a_paused_guest_is_reported_within_two_seconds(tmp_path: Path):
    m = Machine(MachineSpec(name="health", work_dir=tmp_path, memory_mb=128, cpus=1))
    m.start()
    try:
        time.sleep(1)
        assert m.alive() is None
        m.qmp("stop")
        t0 = time.monotonic()
        while m.alive() is None and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        took = time.monotonic() - t0
        why = m.alive()
        assert why is not None and "paused unexpectedly" in why and "still running" in why
        # ~0.05 s measured on a quiet host; the bound leaves room for a CI host running other guests
        assert took < 5.0, f"noticed after {took:.1f}s"
        assert any(e.get("event") == "STOP" for e in m.health.events)
    finally:
        m.stop()
    assert m.proc is not None and m.proc.poll() is not None


@needs_qemu
def test_a_reset_is_logged_never_fatal(tmp_path: Path):
    for expected in (True, False):
        m = Machine(MachineSpec(name="health", work_dir=tmp_path / str(expected), memory_mb=128, cpus=1))
        m.start()
        try:
            if expected:
                m.expect_exit()
            m.qmp("system_reset")  # a RESET is logged, never fatal
            time.sleep(1.0)
            assert m.alive() is None
            assert m.health is not None and m.health._expected_exit is expected
        finally:
            m.stop()


@needs_qemu
def test_the_machine_has_a_pvpanic_device_and_a_firmware_log(tmp_path: Path):
    m = Machine(MachineSpec(name="health", work_dir=tmp_path, memory_mb=128, cpus=1))
    m.start()
    try:
        tree = m.qmp("human-monitor-command", **{"command-line": "info qtree"})
        assert "pvpanic" in tree
        deadline = time.monotonic() + 20
        while "SeaBIOS" not in m.firmware_tail(50) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "SeaBIOS" in m.firmware_tail(50)
    finally:
        m.stop()


# --- KVM that breaks the way our hosts do (a wrapper around the real QEMU) ----------------------

@pytest.fixture
def overlay(tmp_path: Path, base_image: Path) -> Path:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base_image),
                    str(disk)], check=True)
    return disk


@pytest.mark.e2e
@pytest.mark.parametrize("mode, words, limit", [
    ("stop-after-boot", "KVM internal error", 10.0),  # GRUB printed, then KVM stopped the guest
    ("silent", "stopped making progress", 25.0),  # the firmware ran, nothing reached the console
])
def test_a_kvm_boot_that_breaks_is_judged_in_seconds(tmp_path: Path, overlay: Path, monkeypatch,
                                                     mode: str, words: str, limit: float):
    monkeypatch.setenv("BAKER_TEST_KVM_MODE", mode)
    m = Machine(MachineSpec(name="kvmtrial", work_dir=tmp_path / "w", accel="kvm",
                            qemu_binary=str(LOOKALIKE), disk=Drive(overlay), cpus=1, memory_mb=512))
    m.start()
    try:
        verdict = judge_kvm_boot(m)
    finally:
        m.stop()
    assert not verdict.ok
    assert words in verdict.reason
    assert verdict.seconds < limit


@pytest.mark.e2e
def test_a_healthy_boot_passes_the_trial(tmp_path: Path, overlay: Path):
    m = Machine(MachineSpec(name="kvmtrial", work_dir=tmp_path / "w", accel="tcg", disk=Drive(overlay),
                            cpus=1, memory_mb=512))
    m.start()
    try:
        verdict = judge_kvm_boot(m)
        assert verdict.ok, verdict.reason
        assert m.alive() is None
    finally:
        m.stop()


@needs_qemu
def test_the_lookalike_passes_the_kvm_probe_as_broken_hosts_do(monkeypatch):
    from baker.machine.accel import probe_kvm

    if not os.path.exists("/dev/kvm"):
        pytest.skip("the probe needs /dev/kvm to exist before it runs QEMU")
    assert probe_kvm(str(LOOKALIKE)) is None


@needs_qemu
def test_a_work_dir_longer_than_a_socket_path_still_works(tmp_path: Path):
    """TMPDIR may be deep (CI runners, pytest): QMP sockets must not depend on sun_path's 107 bytes."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "qmp-events.sock")) > 108
    m = Machine(MachineSpec(name="deep", work_dir=deep, memory_mb=128, cpus=1))
    m.start()
    try:
        assert m.qmp("query-status")["status"] == "running"
        time.sleep(1.2)
        assert m.health is not None and m.alive() is None
        m.qmp("stop")
        time.sleep(1.5)
        assert "paused" in (m.alive() or "")  # the health monitor's own connection works too
    finally:
        m.stop()
