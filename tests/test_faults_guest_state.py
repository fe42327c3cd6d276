"""A guest that stops while QEMU lives on: every run state noticed in seconds, in real builds.

Each test puts a real TCG guest into one state — a kernel panic (pvpanic), a host disk that fills up
(io-error), a QMP `stop` from outside (paused), a poweroff nobody asked for — or runs the build under
a QEMU wrapper that breaks KVM the way our CI hosts do, and checks that baker names the state within
seconds instead of waiting out ssh_timeout or a provisioner's timeout, and leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from baker.machine.accel import (
    choose_accelerator,
    forget_kvm_results,
    record_kvm_probe,
    recorded_kvm_problem,
)
from tests.helpers.faults import assert_nothing_left, build, start_build, write_template
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

NAME = "gueststate"
LOOKALIKE = ROOT / "tests" / "bin" / "qemu-broken-kvm"
ARMED = "armed-2-marker"  # printed by the guest as armed-$((1+1))-marker, so no log of the command matches


def probe_passed() -> None:
    """Start from what broken hosts record: the probe guest ran under KVM (the probe itself is tested
    in test_guest_health.py; here its 4 s limit must not decide the test on a loaded host)."""
    forget_kvm_results()
    record_kvm_probe(str(LOOKALIKE), None)


def tpl(tmp: Path, base: Path, *, provisioners: str, machine: str = "",
        exports: str = "[{type: qcow2}]") -> Path:
    return write_template(tmp / "t.yaml", f"""name: {NAME}
source:
  cloud_image: {{url: '{base}', checksum: none}}
machine: {{accelerator: tcg, cpus: 1, memory: 768, disk_size: 3G{machine}}}
communicator: {{ssh_timeout: 20m}}
provisioners:
{provisioners}
exports: {exports}
""")


def armed_then(command: str) -> str:
    """A provisioner that says it is armed, does `command` in the background, and would wait 20 min."""
    return f"""  - type: shell
    name: doomed
    timeout: 20m
    inline:
      - "nohup sh -c '{command}' >/dev/null 2>&1 &"
      - "echo armed-$((1+1))-marker"
      - "sleep 1200"
"""


def failed_after_armed(run) -> float:
    """Seconds between the provisioner saying it was armed and the build's failure event."""
    times = {}
    for e in run.events:
        if ARMED in json.dumps(e) and "armed" not in times and e["event"] == "log":
            times["armed"] = e["ts"]
        if e["event"] == "build_failed":
            times["failed"] = e["ts"]
    from datetime import datetime

    def ts(x: str) -> float:
        return datetime.strptime(x, "%Y-%m-%dT%H:%M:%SZ").timestamp()

    assert "armed" in times, "the provisioner never ran"
    return ts(times["failed"]) - ts(times["armed"])


@pytest.mark.parametrize("command, words, limit", [
    # pvpanic turns the panic into an event; the serial tail shows the kernel's own message
    ("sleep 2; echo c > /proc/sysrq-trigger", "panicked", 20),
    # not a bare "SSH dropped": the guest's own poweroff, named
    ("sleep 2; systemctl poweroff", "powered itself off", 30),
], ids=["kernel-panic", "unexpected-poweroff"])
def test_a_guest_that_stops_mid_provisioner_is_named(tmp_path: Path, base_image: Path, command: str,
                                                     words: str, limit: float):
    t = tpl(tmp_path, base_image, provisioners=armed_then(command))
    run = build(t, tmp_path / "out")
    assert run.rc == 1
    assert run.failure["step"].startswith("provision[1]")
    assert words in run.failure["message"]
    assert failed_after_armed(run) < limit  # not the provisioner's 20 min
    if words == "panicked":
        assert "Kernel panic - not syncing: sysrq triggered crash" in run.failure["message"]
        assert Path(run.failure["logs"], "failure-screen.png").exists()
    assert_nothing_left(run, NAME)


def test_host_disk_full_pauses_the_guest_and_is_reported_as_io_error(tmp_path: Path, base_image: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200M", "tmpfs", str(mnt)], check=True)
    try:
        fill = "sleep 1; dd if=/dev/urandom of=/var/tmp/fill bs=1M count=600 oflag=direct"
        t = tpl(tmp_path, base_image, provisioners=armed_then(fill))
        run = build(t, tmp_path / "out", env={"TMPDIR": str(mnt)})
        assert run.rc == 1
        assert run.failure["step"].startswith("provision[1]")
        assert "io-error" in run.failure["message"]
        assert "No space left on device" in run.failure["message"]
        assert "free space" in run.failure["message"]  # the hint
        assert failed_after_armed(run) < 60
        assert_nothing_left(run, NAME)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_guest_paused_from_outside_is_noticed(tmp_path: Path, base_image: Path):
    sock = tmp_path / "inject.sock"
    t = tpl(tmp_path, base_image, provisioners=armed_then("true"),
            machine=f", qemuargs: [['-qmp', 'unix:{sock},server=on,wait=off']]")
    started = time.monotonic()
    proc = start_build(t, tmp_path / "out")
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if ARMED in line:
            break
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    f = s.makefile("rw")
    f.readline()
    for cmd in ('{"execute":"qmp_capabilities"}', '{"execute":"stop"}'):
        f.write(cmd + "\n")
        f.flush()
        f.readline()
    paused_at = time.monotonic()
    rest, stderr = proc.communicate(timeout=300)
    noticed = time.monotonic() - paused_at
    s.close()
    from tests.helpers.faults import _result

    run = _result(proc, "".join(lines) + rest, stderr, tmp_path / "out", started)
    assert run.rc == 1
    assert "paused unexpectedly" in run.failure["message"]
    assert noticed < 20  # detection is ~0.5 s; the rest is cleanup
    assert_nothing_left(run, NAME)


# --- KVM that stops the guest after the bootloader (as on our CI hosts), made deterministic --------

def _fallback_seconds(run) -> float:
    for e in run.events:
        m = re.search(r"KVM cannot run this guest \(.*\((\d+\.\d)s after QEMU started\)\)",
                      e.get("message", ""))
        if m:
            return float(m.group(1))
    raise AssertionError("no fallback warning in the event stream")


def test_auto_falls_back_to_tcg_when_kvm_stops_the_guest_and_remembers(tmp_path: Path, base_image: Path):
    probe_passed()
    t = tpl(tmp_path, base_image, provisioners="  - {type: shell, inline: ['echo built-under-fallback']}",
            machine=f", qemu_binary: '{LOOKALIKE}'", exports="[{type: qcow2}]")
    body = t.read_text().replace("accelerator: tcg", "accelerator: auto")
    t.write_text(body)
    run = build(t, tmp_path / "out", env={"BAKER_TEST_KVM_MODE": "stop-after-boot"})
    assert run.rc == 0, run.stdout[-3000:]
    warnings = [e["message"] for e in run.events if e["event"] == "warning"]
    assert any("restarting under TCG" in w for w in warnings), warnings
    assert _fallback_seconds(run) < 30
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["machine"]["accelerator"] == "tcg"
    assert "KVM internal error" in manifest["machine"]["accelerator_note"]
    assert "built-under-fallback" in run.stdout
    # recorded for this host boot: the next build goes straight to TCG, with the reason
    assert "KVM internal error" in (recorded_kvm_problem(str(LOOKALIKE)) or "")
    choice = choose_accelerator("auto", str(LOOKALIKE))
    assert choice.accel == "tcg" and "KVM internal error" in choice.reason


def test_kvm_requested_fails_fast_with_the_reason(tmp_path: Path, base_image: Path):
    probe_passed()  # judge this boot, not what an earlier test recorded for this "host"
    t = tpl(tmp_path, base_image, provisioners="  - {type: shell, inline: ['true']}",
            machine=f", qemu_binary: '{LOOKALIKE}'")
    t.write_text(t.read_text().replace("accelerator: tcg", "accelerator: kvm"))
    run = build(t, tmp_path / "out", env={"BAKER_TEST_KVM_MODE": "stop-after-boot"})
    assert run.rc == 1
    assert run.failure["step"] == "start-vm"
    assert "KVM cannot run this guest" in run.failure["message"]
    assert "KVM internal error" in run.failure["message"]
    assert run.seconds < 90
    assert_nothing_left(run, NAME)


def test_silent_kvm_falls_back_within_seconds(tmp_path: Path, base_image: Path):
    """The other failure mode: nothing ever reaches the serial console. Stopped once TCG took over."""
    probe_passed()
    t = tpl(tmp_path, base_image, provisioners="  - {type: shell, inline: ['true']}",
            machine=f", qemu_binary: '{LOOKALIKE}'")
    t.write_text(t.read_text().replace("accelerator: tcg", "accelerator: auto"))
    proc = start_build(t, tmp_path / "out", env={"BAKER_TEST_KVM_MODE": "silent"})
    started = time.monotonic()
    seen: list[str] = []
    assert proc.stdout is not None

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)
            if "restarting under TCG" in line:
                proc.terminate()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        reader.join(timeout=120)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed expectation must not leave a build (and its QEMU) running
            proc.kill()
            proc.wait()
    assert any("restarting under TCG" in line for line in seen), "".join(seen)[-2000:]
    assert time.monotonic() - started < 60
    assert proc.returncode == 143
    out = subprocess.run(["pgrep", "-f", f"process=baker-{NAME}"], capture_output=True, text=True)
    assert not out.stdout.strip(), "QEMU outlived the build"
