"""QEMU command line: deterministic, loopback-only forwards, user args appended, never replacing."""

from __future__ import annotations

from pathlib import Path

from baker.machine.qemu import Drive, MachineSpec, build_argv


def spec(**kw) -> MachineSpec:
    base = dict(name="t", work_dir=Path("/w"), disk=Drive(Path("/w/disk.qcow2")),
                cdroms=[Drive(Path("/w/seed.iso"), "raw", "cdrom", True)])
    base.update(kw)
    return MachineSpec(**base)


def test_argv_is_deterministic():
    assert build_argv(spec()) == build_argv(spec())


def test_forwards_bind_loopback_on_a_port_qemu_chooses():
    argv = build_argv(spec(guest_ports=[22, 80]))
    net = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:0-:22" in net and "hostfwd=tcp:127.0.0.1:0-:80" in net
    assert "0.0.0.0" not in " ".join(argv)


def test_starts_paused_headless_with_serial_and_qmp_in_work_dir():
    argv = build_argv(spec())
    assert "-S" in argv and argv[argv.index("-display"):argv.index("-display") + 2] == ["-display", "none"]
    assert "unix:qmp.sock,server=on,wait=off" in argv  # relative: QEMU runs in the work dir
    assert "file,id=serial0,path=/w/serial.log" in argv


def test_qemuargs_are_appended_after_ours():
    argv = build_argv(spec(extra_args=["-device", "virtio-balloon"]))
    assert argv[-2:] == ["-device", "virtio-balloon"]
    assert any(a.startswith("virtio-blk-pci,drive=disk0") for a in argv)


def test_discard_unmap_reaches_the_drive():
    argv = build_argv(spec(disk_discard="unmap"))
    drive = next(a for a in argv if a.startswith("file=/w/disk.qcow2"))
    assert "discard=unmap" in drive and "detect-zeroes=unmap" in drive


def test_bios_iso_install_boots_the_cd_once_then_the_disk():
    argv = build_argv(spec(boot_from_cdrom=True))
    assert argv[argv.index("-boot") + 1] == "order=c,once=d"
    assert not any("bootindex" in a for a in argv)


def test_uefi_iso_install_orders_cd_before_disk():
    argv = build_argv(spec(boot_from_cdrom=True, pflash_code=Path("/fw/CODE.fd")))
    assert any("ide-cd,drive=cd0,bootindex=1" in a for a in argv)
    assert any("virtio-blk-pci,drive=disk0,bootindex=2" in a for a in argv)
    assert "-boot" not in argv


def test_uefi_pflash_code_readonly_vars_writable():
    argv = build_argv(spec(pflash_code=Path("/fw/CODE.fd"), pflash_vars=Path("/w/VARS.fd")))
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in argv
    assert "if=pflash,format=raw,unit=1,file=/w/VARS.fd" in argv
