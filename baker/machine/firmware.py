"""Firmware discovery from QEMU's firmware descriptors (docs/interop/firmware.json).

Distros move and rename OVMF files (Ubuntu 24.04 ships only the 4M builds, Fedora uses qcow2),
which broke hard-coded paths in Packer (plugin-qemu #217). The descriptors every distro ships in
/usr/share/qemu/firmware say which files pair up and what each build needs (SMM, q35), so we
read them first and only then fall back to well-known paths.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from baker.errors import BakerError

log = logging.getLogger("baker.machine.firmware")

DESCRIPTOR_DIRS: tuple[Path, ...] = (
    Path("/usr/share/qemu/firmware"),  # distro
    Path("/etc/qemu/firmware"),  # admin overrides (same file name wins)
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "qemu" / "firmware",
)

# (code, vars, secure) candidates when no descriptor matches: Debian/Ubuntu, then Fedora/RHEL, Arch
FALLBACKS: tuple[tuple[str, str, bool], ...] = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", False),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", False),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd", False),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", False),
    ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", True),
    ("/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd", True),
    ("/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd", True),
    ("/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", True),
)

OVMF_HINT = "install OVMF: apt-get install ovmf (Debian/Ubuntu), dnf install edk2-ovmf (Fedora/RHEL)"


@dataclass(frozen=True)
class Firmware:
    """What QEMU needs for one firmware choice. `code` is None for QEMU's built-in SeaBIOS."""

    kind: Literal["bios", "uefi"]
    code: Path | None = None
    vars_template: Path | None = None
    code_format: str = "raw"
    vars_format: str = "raw"
    secure_boot: bool = False
    # appended to -machine, e.g. ("smm=on",) for Secure Boot builds (SMM protects the varstore)
    machine_flags: tuple[str, ...] = ()
    # firmware-wide qemu arguments that do not depend on the per-build varstore
    extra_args: tuple[str, ...] = ()
    description: str = ""
    descriptor: Path | None = None
    features: frozenset[str] = field(default_factory=frozenset)

    def qemu_args(self, vars_path: Path | None) -> list[str]:
        """pflash drives (code read-only, per-build vars writable) plus `extra_args`."""
        if self.kind == "bios" or self.code is None:
            return []
        if vars_path is None:
            raise BakerError("UEFI needs a per-build varstore; call prepare_vars() first")
        return [
            "-drive", f"if=pflash,unit=0,format={self.code_format},readonly=on,file={self.code}",
            "-drive", f"if=pflash,unit=1,format={self.vars_format},file={vars_path}",
            *self.extra_args,
        ]


def _machine_alias(machine_type: str) -> str:
    """A concrete-looking machine name so descriptor globs like `pc-q35-*` can match `q35`."""
    if machine_type == "q35":
        return "pc-q35-0"
    if machine_type in ("pc", "i440fx"):
        return "pc-i440fx-0"
    return machine_type


def _is_q35(machine_type: str) -> bool:
    return fnmatch.fnmatch(_machine_alias(machine_type), "pc-q35-*")


def read_descriptors(dirs: Sequence[Path] = DESCRIPTOR_DIRS) -> list[tuple[Path, dict[str, Any]]]:
    """All descriptors, later dirs overriding earlier ones by file name, in file-name order."""
    by_name: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for p in d.glob("*.json"):
                by_name[p.name] = p
    out = []
    for name in sorted(by_name):
        path = by_name[name]
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("ignoring firmware descriptor %s: %s", path, e)
            continue
        if isinstance(data, dict) and data:  # an empty file masks a distro descriptor
            out.append((path, data))
    return out


def _from_descriptor(path: Path, d: dict[str, Any], *, arch: str, machine: str,
                     secure_boot: bool) -> Firmware | None:
    if "uefi" not in d.get("interface-types", []):
        return None
    mapping = d.get("mapping", {})
    if mapping.get("device") != "flash" or "nvram-template" not in mapping:
        return None
    globs = [g for t in d.get("targets", []) if t.get("architecture") == arch for g in t.get("machines", [])]
    if not any(fnmatch.fnmatch(machine, g) for g in globs):
        return None
    features = frozenset(d.get("features", []))
    if secure_boot != ("enrolled-keys" in features and "secure-boot" in features):
        return None
    code, nvram = mapping["executable"], mapping["nvram-template"]
    if not (Path(code["filename"]).is_file() and Path(nvram["filename"]).is_file()):
        return None
    smm = "requires-smm" in features
    return Firmware(
        kind="uefi",
        code=Path(code["filename"]),
        vars_template=Path(nvram["filename"]),
        code_format=code.get("format", "raw"),
        vars_format=nvram.get("format", "raw"),
        secure_boot=secure_boot,
        machine_flags=("smm=on",) if smm else (),
        extra_args=("-global", "driver=cfi.pflash01,property=secure,value=on") if smm else (),
        description=d.get("description", ""),
        descriptor=path,
        features=features,
    )


def find_firmware(
    kind: Literal["bios", "uefi"] = "bios",
    *,
    secure_boot: bool = False,
    machine_type: str = "q35",
    arch: str = "x86_64",
    descriptor_dirs: Sequence[Path] = DESCRIPTOR_DIRS,
    fallbacks: Sequence[tuple[str, str, bool]] = FALLBACKS,
) -> Firmware:
    """The firmware for a build: SeaBIOS for `bios`, else the best-matching OVMF build.

    Without Secure Boot, builds that need no SMM are preferred (they also run on i440fx).
    """
    if kind == "bios":
        if secure_boot:
            raise BakerError("secure_boot needs firmware: uefi", hint="set machine.firmware: uefi")
        return Firmware(kind="bios", description="QEMU's built-in SeaBIOS")
    if secure_boot and not _is_q35(machine_type):
        raise BakerError(f"Secure Boot needs the q35 machine type, not '{machine_type}'",
                         hint="set machine.machine_type: q35")
    machine = _machine_alias(machine_type)
    found = [fw for path, d in read_descriptors(descriptor_dirs)
             if (fw := _from_descriptor(path, d, arch=arch, machine=machine, secure_boot=secure_boot))]
    found.sort(key=lambda fw: bool(fw.machine_flags) and not secure_boot)  # stable: keeps file order
    if found:
        fw = found[0]
        log.debug("firmware: %s (%s)", fw.code, fw.descriptor)
        return fw
    if arch == "x86_64":
        for code, nvram, secure in fallbacks:
            if secure == secure_boot and Path(code).is_file() and Path(nvram).is_file():
                log.debug("firmware: %s (no descriptor matched; well-known path)", code)
                return Firmware(
                    kind="uefi", code=Path(code), vars_template=Path(nvram), secure_boot=secure,
                    machine_flags=("smm=on",) if secure else (),
                    extra_args=("-global", "driver=cfi.pflash01,property=secure,value=on") if secure else (),
                    description=f"{Path(code).name} (well-known path)",
                )
    what = "Secure Boot UEFI firmware (OVMF with enrolled keys)" if secure_boot else "UEFI firmware (OVMF)"
    looked = ", ".join(str(d) for d in descriptor_dirs)
    raise BakerError(f"no {what} for {arch}/{machine_type} found (looked in {looked})", hint=OVMF_HINT)


def prepare_vars(firmware: Firmware, work_dir: str | os.PathLike[str]) -> Path:
    """A private writable copy of the varstore template for one build (boot entries land here)."""
    if firmware.vars_template is None:
        raise BakerError(f"{firmware.kind} firmware has no UEFI varstore to copy")
    suffix = ".qcow2" if firmware.vars_format == "qcow2" else ".fd"
    dest = Path(work_dir) / f"efivars{suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(firmware.vars_template, dest)
    os.chmod(dest, 0o600)
    return dest
