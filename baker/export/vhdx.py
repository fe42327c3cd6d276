"""VHDX for Hyper-V, with a JSON sidecar and `create-vm.ps1`.

Hyper-V has no import descriptor Linux can write (`Import-VM` reads binary .vmcx), so the hardware
facts travel as JSON and a short script creates the VM from them with `New-VM`. Generation follows the
firmware: 1 boots BIOS/MBR, 2 boots UEFI/GPT. Secure boot is off: Hyper-V's default template only
trusts Windows, and Linux shims need the UEFI CA template, which users opt into themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    MiB,
    Staging,
    VMSpec,
    convert,
    help_field,
)
from baker.proc import run

SIGNATURES = {0: b"vhdxfile", 64 << 10: b"head", 128 << 10: b"head", 192 << 10: b"regi", 256 << 10: b"regi"}


def check_vhdx(path: Path) -> None:
    """File identifier, both headers and both region tables where the spec puts them, then qemu's check."""
    with open(path, "rb") as f:
        for offset, sig in SIGNATURES.items():
            f.seek(offset)
            if f.read(len(sig)) != sig:
                raise ExportError(f"{path.name}: no '{sig.decode()}' signature at offset {offset}")
    run(["qemu-img", "check", "-q", "-f", "vhdx", path])


@dataclass
class VhdxOptions:
    filename: str | None = help_field(None, "output file name (default: <name>.vhdx)")
    subformat: Literal["dynamic", "fixed"] = help_field(
        "dynamic", "dynamic grows as written; fixed is full size")
    block_size_mb: int = help_field(0, "VHDX block size in MiB, 1 to 256 (0: qemu picks; Hyper-V uses 32)")
    metadata_filename: str | None = help_field(None, "hardware sidecar name (default: <name>.hyperv.json)")
    script_filename: str = help_field(
        "create-vm.ps1", "PowerShell script that creates the VM from the sidecar")
    switch_name: str = help_field("Default Switch", "Hyper-V virtual switch the NIC connects to")
    generation: int | None = help_field(None, "Hyper-V VM generation (default: 1 for bios, 2 for uefi)")


_SCRIPT = r"""# Creates a Hyper-V VM from {vhdx} using the hardware facts in {meta}.
# Written by baker. Run in an elevated PowerShell on the Hyper-V host:
#   .\{script} [-Name NAME] [-SwitchName SWITCH] [-VhdPath PATH]
[CmdletBinding()]
param(
    [string]$Name,
    [string]$SwitchName,
    [string]$VhdPath,
    [string]$ConfigPath = (Join-Path $PSScriptRoot '{meta}')
)
$ErrorActionPreference = 'Stop'
$cfg = Get-Content -Raw -LiteralPath $ConfigPath | ConvertFrom-Json
if (-not $Name) {{ $Name = $cfg.name }}
if (-not $SwitchName) {{ $SwitchName = $cfg.switch_name }}
if (-not $VhdPath) {{ $VhdPath = Join-Path $PSScriptRoot $cfg.disk }}
$vm = New-VM -Name $Name -Generation $cfg.generation -MemoryStartupBytes ([int64]$cfg.memory_mb * 1MB) `
    -VHDPath $VhdPath -SwitchName $SwitchName
Set-VMProcessor -VM $vm -Count $cfg.cpus
Set-VMMemory -VM $vm -DynamicMemoryEnabled $false
if ($cfg.generation -eq 2) {{
    if ($cfg.secure_boot) {{
        Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate MicrosoftUEFICertificateAuthority
    }} else {{
        Set-VMFirmware -VM $vm -EnableSecureBoot Off
    }}
}}
Write-Output "created VM '$Name' (generation $($cfg.generation), $($cfg.cpus) CPUs, $($cfg.memory_mb) MiB)"
"""


class VhdxExporter(BaseExporter):
    type_name = "vhdx"
    Options: ClassVar[type] = VhdxOptions

    def outputs(self, vm: VMSpec, options: Any) -> list[str]:
        return [options.filename or f"{vm.name}.vhdx", options.metadata_filename or f"{vm.name}.hyperv.json",
                options.script_filename]

    def validate(self, vm: VMSpec, options: Any) -> None:
        if options.block_size_mb and not 1 <= options.block_size_mb <= 256:
            raise ExportError("export vhdx: block_size_mb must be between 1 and 256 (or 0 for auto)")
        if options.generation not in (None, 1, 2):
            raise ExportError("export vhdx: generation must be 1 or 2")
        if options.generation == 1 and vm.firmware == "uefi":
            raise ExportError("export vhdx: a generation 1 VM cannot boot a UEFI image")
        if not options.script_filename.endswith(".ps1"):
            raise ExportError("export vhdx: script_filename must end in .ps1")

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        vm = ctx.vm
        disk_name, meta_name, script_name = self.outputs(vm, options)
        disk = stage.path(disk_name, "disk", "vhdx")
        opts: dict[str, str | int] = {"subformat": options.subformat}
        if options.block_size_mb:
            opts["block_size"] = options.block_size_mb * MiB
        convert(ctx, disk, "vhdx", opts)
        check_vhdx(disk)
        generation = options.generation or (2 if vm.firmware == "uefi" else 1)
        meta = {
            "name": vm.name, "generation": generation, "firmware": vm.firmware, "secure_boot": False,
            "cpus": vm.cpus, "memory_mb": vm.memory_mb, "disk": disk_name, "disk_size": vm.disk_size,
            "switch_name": options.switch_name, "version": vm.version, "description": vm.description,
        }
        stage.path(meta_name, "metadata", "json").write_text(json.dumps(meta, indent=2) + "\n")
        script = _SCRIPT.format(vhdx=disk_name, meta=meta_name, script=script_name)
        # CRLF and a BOM: Windows PowerShell 5.1 reads BOM-less files as the ANSI code page.
        stage.path(script_name, "script", "ps1").write_bytes(
            b"\xef\xbb\xbf" + script.replace("\n", "\r\n").encode())
