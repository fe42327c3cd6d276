"""Typing boot_commands over QMP: event order, timing, cancel, <waitFor>; then a real GRUB in QEMU."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from baker.boot.keys import parse_boot_command
from baker.boot.typist import BootCommandCancelled, SerialWatcher, WaitForTimeout, type_boot_command
from tests.helpers.boot import MENU_TITLE, have_grub_mkrescue, make_test_boot_iso, qemu


class FakeQMP:
    def __init__(self, fail_on: int | None = None):
        self.events: list[tuple[str, bool]] = []
        self.times: list[float] = []
        self.fail_on = fail_on

    def __call__(self, cmd: str, args: dict[str, Any] | None) -> Any:
        assert cmd == "input-send-event"
        assert args is not None
        for ev in args["events"]:
            assert ev["type"] == "key" and ev["data"]["key"]["type"] == "qcode"
            self.events.append((ev["data"]["key"]["data"], ev["data"]["down"]))
            self.times.append(time.monotonic())
        if self.fail_on is not None and len(self.events) >= self.fail_on:
            return {"error": {"class": "GenericError", "desc": "boom"}}
        return {}


def test_shifted_char_is_shift_down_key_down_key_up_shift_up(tmp_path):
    qmp = FakeQMP()
    type_boot_command(parse_boot_command("A<"), qmp, key_interval=0, serial_log=tmp_path / "s.log")
    assert qmp.events == [
        ("shift", True), ("a", True), ("a", False), ("shift", False),
        ("shift", True), ("comma", True), ("comma", False), ("shift", False),
    ]


def test_key_interval_between_every_event(tmp_path):
    qmp = FakeQMP()
    start = time.monotonic()
    type_boot_command(parse_boot_command("abc"), qmp, key_interval=0.05, serial_log=tmp_path / "s.log")
    gaps = [b - a for a, b in zip(qmp.times, qmp.times[1:], strict=False)]
    assert len(qmp.events) == 6
    assert min(gaps) >= 0.045
    assert time.monotonic() - start >= 0.3


def test_wait_sleeps(tmp_path):
    start = time.monotonic()
    type_boot_command(parse_boot_command("<wait500ms>"), FakeQMP(), key_interval=0, serial_log=tmp_path / "s")
    assert 0.45 <= time.monotonic() - start < 2


def test_cancel_stops_typing_quickly_and_releases_held_keys(tmp_path):
    qmp = FakeQMP()
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(BootCommandCancelled):
        type_boot_command(parse_boot_command("<leftCtrlOn>" + "x" * 200), qmp, key_interval=0.02,
                          serial_log=tmp_path / "s.log", cancel=cancel)
    assert time.monotonic() - start < 1
    assert len(qmp.events) < 40
    assert qmp.events[-1] == ("ctrl", False)  # not left stuck in the guest


def test_cancel_interrupts_a_long_wait(tmp_path):
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(BootCommandCancelled):
        type_boot_command(parse_boot_command("<wait1h>"), FakeQMP(), key_interval=0,
                          serial_log=tmp_path / "s.log", cancel=cancel)
    assert time.monotonic() - start < 1


def test_qmp_error_is_reported(tmp_path):
    with pytest.raises(Exception, match="boom"):
        type_boot_command(parse_boot_command("ab"), FakeQMP(fail_on=1), key_interval=0,
                          serial_log=tmp_path / "s.log")


def test_wait_for_sees_text_written_later(tmp_path):
    log = tmp_path / "serial.log"
    log.write_bytes(b"booting\r\n\x1b[1;1Hbo")

    def later():
        time.sleep(0.3)
        with open(log, "ab") as f:
            f.write(b"ot: ")  # the prompt is split across writes and has no newline

    threading.Thread(target=later).start()
    qmp = FakeQMP()
    type_boot_command(parse_boot_command('<waitFor "boot: " 5s>x'), qmp, key_interval=0, serial_log=log,
                      poll_interval=0.05)
    assert qmp.events == [("x", True), ("x", False)]


def test_wait_for_needs_a_new_occurrence_after_a_match(tmp_path):
    log = tmp_path / "serial.log"
    log.write_text("login: \n")
    with pytest.raises(WaitForTimeout):
        type_boot_command(parse_boot_command('<waitFor "login:"><waitFor "login:" 300ms>'), FakeQMP(),
                          key_interval=0, serial_log=log, poll_interval=0.05)


def test_wait_for_timeout_carries_last_20_serial_lines(tmp_path):
    log = tmp_path / "serial.log"
    log.write_text("".join(f"\x1b[0mline {i}\r\n" for i in range(50)))
    with pytest.raises(WaitForTimeout) as e:
        type_boot_command(parse_boot_command('<waitFor "never" 200ms>'), FakeQMP(), key_interval=0,
                          serial_log=log, poll_interval=0.05)
    assert e.value.tail == [f"line {i}" for i in range(30, 50)]
    assert "line 49" in str(e.value) and "line 29" not in str(e.value)
    assert 'waitFor "never"' in str(e.value)


def test_serial_watcher_handles_missing_file(tmp_path):
    w = SerialWatcher(tmp_path / "nope.log")
    assert not w.find("x")
    (tmp_path / "nope.log").write_text("x")
    assert w.find("x")


# -- end to end: GRUB from a tiny ISO in QEMU/TCG, keys through the emulated PS/2 keyboard -----------

needs_grub = pytest.mark.skipif(not have_grub_mkrescue(), reason="grub-mkrescue/xorriso/mtools missing")
# QEMU's PS/2 queue holds only a few keys: at 10 ms a TCG guest starved of CPU by other VMs drops some
KEY_INTERVAL = 0.03


@pytest.fixture(scope="session")
def test_iso(tmp_path_factory) -> Path:
    return make_test_boot_iso(tmp_path_factory.mktemp("iso") / "test-boot.iso")


@pytest.mark.e2e
@needs_grub
def test_type_into_grub_with_shifted_characters(tmp_path, test_iso):
    with qemu(tmp_path, ["-cdrom", str(test_iso), "-boot", "d"]) as vm:
        command = [
            f'<waitFor "{MENU_TITLE}" 2m>c<waitFor "grub>" 30s>',
            "set b=BAKER<enter>",
            # the output line differs from what was typed (the variable is expanded), so finding it
            # proves GRUB received every character, shifted ones included
            'echo "${b}-OK-<>|~Xyz:?!@#%^&*()_+{}"<enter>',
            '<waitFor "BAKER-OK-<>|~Xyz:?!@#%^&*()_+{}" 30s>',
        ]
        start = time.monotonic()
        type_boot_command(parse_boot_command(command), vm.execute, key_interval=KEY_INTERVAL,
                          serial_log=vm.serial_log)
        took = time.monotonic() - start
    lines = SerialWatcher(vm.serial_log).tail(5)
    assert "BAKER-OK-<>|~Xyz:?!@#%^&*()_+{}" in lines
    print(f"grub menu + typing took {took:.1f}s")


@pytest.mark.e2e
@needs_grub
def test_wait_for_timeout_in_a_real_vm(tmp_path, test_iso):
    with qemu(tmp_path, ["-cdrom", str(test_iso), "-boot", "d"]) as vm, pytest.raises(WaitForTimeout) as e:
        type_boot_command(parse_boot_command(f'<waitFor "{MENU_TITLE}" 2m><waitFor "NEVER" 2s>'),
                          vm.execute, key_interval=KEY_INTERVAL, serial_log=vm.serial_log)
    assert any(MENU_TITLE in line for line in e.value.tail)


def test_clean_console_strips_terminal_escapes():
    from baker.boot.typist import clean_console

    raw = "\x1b[=3h\x1b[2J\x1b(0lqq\x1b(Bgrub> \x1b[?25h\x1b[1;37;40mX\x1b]0;title\x07Y\x1b=\r\n"
    assert clean_console(raw) == "lqqgrub> XY\n"


# -- the Debian netinst template's boot_command against the ISO from scripts/make-netinst-iso -------

ROOT = Path(__file__).resolve().parents[1]
DI_KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")


@pytest.mark.e2e
@pytest.mark.slow
@needs_grub
@pytest.mark.skipif(not DI_KERNEL.exists(), reason="apt-get install debian-installer-12-netboot-amd64")
def test_netinst_template_boot_command_starts_installer_and_fetches_preseed(tmp_path, caplog):
    import logging

    import jinja2
    import yaml

    from baker.httpserver import HTTPServer
    from baker.proc import run
    from baker.units import parse_duration

    caplog.set_level(logging.INFO, logger="baker.http")
    iso = tmp_path / "netinst.iso"
    run([ROOT / "scripts" / "make-netinst-iso", iso])
    template = yaml.safe_load((ROOT / "templates" / "debian-12-netinst.yaml").read_text())
    src = template["source"]
    variables = {k: v.get("default") for k, v in template["variables"].items()}
    key = "ssh-ed25519 AAAA test"
    with HTTPServer(ROOT / "templates" / src["http_directory"], {"/authorized_keys": key}) as http:
        ctx = {"build": {"http_ip": "10.0.2.2", "http_port": http.port, "ssh_username": "baker",
                         "ssh_public_key": key}, "var": variables}
        command = [jinja2.Template(line).render(**ctx) for line in src["boot_command"]]
        net = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
        with qemu(tmp_path, ["-cdrom", str(iso), *net], memory=1024, machine="q35") as vm:
            interval = parse_duration(src["boot_key_interval"])
            type_boot_command(parse_boot_command(command), vm.execute, key_interval=interval,
                              serial_log=vm.serial_log)  # ends with <waitFor "Linux version">
            deadline = time.monotonic() + 240
            while not any("GET /preseed.cfg 200" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, SerialWatcher(vm.serial_log).tail(20)
                assert vm.proc.poll() is None
                time.sleep(0.5)
            took = time.monotonic() - vm.started
    cmdline = "\n".join(SerialWatcher(vm.serial_log).tail(2000))
    assert f"url=http://10.0.2.2:{http.port}/preseed.cfg" in cmdline
    print(f"netinst: preseed fetched {took:.0f}s after QEMU started")


def test_wait_for_fails_fast_when_the_vm_dies(tmp_path):
    from baker.errors import BakerError

    start = time.monotonic()
    with pytest.raises(BakerError, match=r"VM stopped while waiting.*exited with code 1"):
        type_boot_command(parse_boot_command('<waitFor "never" 1h>'), FakeQMP(), key_interval=0,
                          serial_log=tmp_path / "s.log", alive=lambda: "QEMU exited with code 1",
                          poll_interval=0.05)
    assert time.monotonic() - start < 1


def test_serial_watcher_keeps_memory_bounded_and_still_matches(tmp_path):
    log = tmp_path / "serial.log"
    w = SerialWatcher(log)
    with open(log, "w") as f:
        for i in range(3000):
            f.write(f"\x1b[2J noise line {i:05d} " + "x" * 80 + "\r\n")
    assert not w.find("PROMPT>")
    assert len(w._done) <= 70 * 1024
    with open(log, "a") as f:
        f.write("PROMPT")
    assert not w.find("PROMPT>")
    with open(log, "a") as f:
        f.write("> ")  # the needle straddles two polls
    assert w.find("PROMPT>")
    assert w.tail(1) == ["PROMPT> "]
    assert not w.find("PROMPT>")
