"""Firmware discovery from QEMU descriptors, fallbacks, per-build varstores, and real UEFI boots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from baker.boot.keys import parse_boot_command
from baker.boot.typist import type_boot_command
from baker.errors import BakerError
from baker.machine.firmware import find_firmware, prepare_vars, read_descriptors
from tests.helpers.boot import MENU_TITLE, have_grub_mkrescue, make_test_boot_iso, qemu

SYSTEM_OVMF = any(Path("/usr/share/qemu/firmware").glob("*.json"))
needs_ovmf = pytest.mark.skipif(not SYSTEM_OVMF, reason="no QEMU firmware descriptors (apt-get install ovmf)")


def descriptor(path: Path, code: Path, nvram: Path, features: list[str], machines: list[str],
               fmt: str = "raw") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "description": path.stem,
        "interface-types": ["uefi"],
        "mapping": {"device": "flash", "executable": {"filename": str(code), "format": fmt},
                    "nvram-template": {"filename": str(nvram), "format": fmt}},
        "targets": [{"architecture": "x86_64", "machines": machines}],
        "features": features,
    }))


@pytest.fixture
def fake(tmp_path):
    """A descriptor dir mimicking Debian's ovmf package, with files under tmp_path."""
    files = {n: tmp_path / "fw" / n for n in ("CODE.fd", "VARS.fd", "CODE.sb.fd", "VARS.ms.fd")}
    for p in files.values():
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(p.name.encode() * 8)
    d = tmp_path / "share"
    descriptor(d / "40-secure-enrolled.json", files["CODE.sb.fd"], files["VARS.ms.fd"],
               ["enrolled-keys", "requires-smm", "secure-boot"], ["pc-q35-*"])
    descriptor(d / "50-secure.json", files["CODE.sb.fd"], files["VARS.fd"],
               ["requires-smm", "secure-boot"], ["pc-q35-*"])
    descriptor(d / "60-plain.json", files["CODE.fd"], files["VARS.fd"], ["acpi-s3"],
               ["pc-i440fx-*", "pc-q35-*"])
    return d, files


def test_bios_is_seabios():
    fw = find_firmware("bios")
    assert fw.kind == "bios" and fw.code is None and fw.qemu_args(None) == []


def test_uefi_prefers_plain_build_without_smm(fake):
    d, files = fake
    for machine in ("q35", "pc", "pc-q35-7.2", "pc-i440fx-7.2"):
        fw = find_firmware("uefi", machine_type=machine, descriptor_dirs=[d], fallbacks=[])
        assert (fw.code, fw.vars_template) == (files["CODE.fd"], files["VARS.fd"])
        assert fw.machine_flags == () and fw.extra_args == () and not fw.secure_boot


def test_secure_boot_picks_enrolled_keys_with_smm(fake, tmp_path):
    d, files = fake
    fw = find_firmware("uefi", secure_boot=True, descriptor_dirs=[d], fallbacks=[])
    assert (fw.code, fw.vars_template) == (files["CODE.sb.fd"], files["VARS.ms.fd"])
    assert fw.machine_flags == ("smm=on",)
    vars_path = prepare_vars(fw, tmp_path / "work")
    args = fw.qemu_args(vars_path)
    assert args[-2:] == ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    assert f"if=pflash,unit=0,format=raw,readonly=on,file={files['CODE.sb.fd']}" in args
    assert f"if=pflash,unit=1,format=raw,file={vars_path}" in args


def test_secure_boot_needs_q35_and_uefi(fake):
    d, _ = fake
    with pytest.raises(BakerError, match="q35"):
        find_firmware("uefi", secure_boot=True, machine_type="pc", descriptor_dirs=[d])
    with pytest.raises(BakerError, match="firmware: uefi"):
        find_firmware("bios", secure_boot=True)


def test_override_dir_masks_by_file_name_and_skips_missing_files(fake, tmp_path):
    d, files = fake
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "60-plain.json").write_text("{}")  # an empty override hides the distro's descriptor
    descriptor(etc / "70-missing.json", tmp_path / "nope.fd", files["VARS.fd"], [], ["pc-q35-*"])
    descriptor(etc / "80-qcow2.json", files["CODE.fd"], files["VARS.fd"], [], ["pc-q35-*"], fmt="qcow2")
    assert [p.name for p, _ in read_descriptors([d, etc])] == [
        "40-secure-enrolled.json", "50-secure.json", "70-missing.json", "80-qcow2.json"]
    fw = find_firmware("uefi", descriptor_dirs=[d, etc], fallbacks=[])
    assert fw.descriptor == etc / "80-qcow2.json" and fw.code_format == "qcow2"
    assert prepare_vars(fw, tmp_path / "w").name == "efivars.qcow2"


def test_fallback_paths_when_no_descriptor_matches(fake, tmp_path):
    _, files = fake
    fw = find_firmware("uefi", descriptor_dirs=[tmp_path / "none"],
                       fallbacks=[(str(tmp_path / "x.fd"), str(files["VARS.fd"]), False),
                                  (str(files["CODE.fd"]), str(files["VARS.fd"]), False)])
    assert fw.code == files["CODE.fd"] and fw.descriptor is None


def test_missing_ovmf_is_a_clear_error(tmp_path):
    with pytest.raises(BakerError) as e:
        find_firmware("uefi", descriptor_dirs=[tmp_path], fallbacks=[])
    assert "no UEFI firmware (OVMF)" in str(e.value) and "apt-get install ovmf" in str(e.value)
    with pytest.raises(BakerError, match="Secure Boot UEFI firmware"):
        find_firmware("uefi", secure_boot=True, descriptor_dirs=[tmp_path], fallbacks=[])


def test_prepare_vars_copies_per_build(fake, tmp_path):
    d, files = fake
    fw = find_firmware("uefi", descriptor_dirs=[d], fallbacks=[])
    a, b = prepare_vars(fw, tmp_path / "a"), prepare_vars(fw, tmp_path / "b")
    assert a != b and a.read_bytes() == files["VARS.fd"].read_bytes()
    a.write_bytes(b"changed")  # a build's boot entries never leak into the template or another build
    assert files["VARS.fd"].read_bytes() != b"changed" and b.read_bytes() == files["VARS.fd"].read_bytes()
    assert os.stat(a).st_mode & 0o777 == 0o600
    with pytest.raises(BakerError):
        prepare_vars(find_firmware("bios"), tmp_path)


@needs_ovmf
def test_system_descriptors_debian_ovmf():
    fw = find_firmware("uefi")
    assert fw.code is not None and fw.code.is_file() and fw.vars_template is not None
    assert fw.machine_flags == ()
    sb = find_firmware("uefi", secure_boot=True)
    assert sb.secure_boot and "enrolled-keys" in sb.features and sb.machine_flags == ("smm=on",)


# -- real UEFI boots of the test ISO under TCG -----------------------------------------------------

needs_grub = pytest.mark.skipif(not have_grub_mkrescue() or not Path("/usr/lib/grub/x86_64-efi").is_dir(),
                                reason="grub-mkrescue with x86_64-efi modules missing")


@pytest.fixture(scope="module")
def test_iso(tmp_path_factory) -> Path:
    return make_test_boot_iso(tmp_path_factory.mktemp("iso") / "test-boot.iso")


def _boot(tmp_path: Path, iso: Path, secure_boot: bool):
    fw = find_firmware("uefi", secure_boot=secure_boot)
    vars_path = prepare_vars(fw, tmp_path)
    machine = ",".join(["q35", *fw.machine_flags])
    return qemu(tmp_path, ["-cdrom", str(iso), *fw.qemu_args(vars_path)], machine=machine)


@pytest.mark.e2e
@needs_ovmf
@needs_grub
def test_uefi_boot_reaches_grub_menu_and_takes_keys(tmp_path, test_iso):
    with _boot(tmp_path, test_iso, secure_boot=False) as vm:
        took = vm.wait_serial(MENU_TITLE, 120)
        # under UEFI GRUB reads keys through the firmware's console, still from the PS/2 keyboard
        command = 'c<waitFor "grub>" 30s>set u=UEFI<enter>echo "${u}-<>|OK"<enter><waitFor "UEFI-<>|OK" 30s>'
        type_boot_command(parse_boot_command(command), vm.execute, key_interval=0.03,
                          serial_log=vm.serial_log)
    print(f"UEFI boot to the GRUB menu: {took:.1f}s")


@pytest.mark.e2e
@needs_ovmf
@needs_grub
def test_secure_boot_firmware_enforces_signatures(tmp_path, test_iso):
    """grub-mkrescue's GRUB is unsigned: enrolled-keys OVMF must refuse it (proves SB is on)."""
    start = time.monotonic()
    with _boot(tmp_path, test_iso, secure_boot=True) as vm:
        vm.wait_serial("Access Denied", 120)
        assert MENU_TITLE not in vm.serial_log.read_text(errors="replace")
    print(f"Secure Boot refusal seen after {time.monotonic() - start:.1f}s")
