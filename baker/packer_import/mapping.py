"""Packer's QEMU builder, provisioners, post-processors and variables → a baker template (plain data).

Every key of the input ends up in exactly one place: mapped to a baker key, noted as not needed in
baker (with why), or reported as unmapped with its line. The key tables below are the reference for
what `baker import` understands.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.packer_import.expressions import convert_text
from baker.packer_import.nodes import Obj, PackerDoc, PackerVar, Plugin

# builder key → (section, baker key); "source" keys go under source:, not source.iso/cloud_image
BUILDER_KEYS: dict[str, tuple[str, str]] = {
    "boot_command": ("source", "boot_command"), "boot_wait": ("source", "boot_wait"),
    "boot_key_interval": ("source", "boot_key_interval"), "http_directory": ("source", "http_directory"),
    "http_content": ("source", "http_content"), "cd_files": ("source", "cd_files"),
    "cd_content": ("source", "cd_content"), "cd_label": ("source", "cd_label"),
    "cpus": ("machine", "cpus"), "memory": ("machine", "memory"), "machine_type": ("machine", "machine_type"),
    "cpu_model": ("machine", "cpu_model"), "net_device": ("machine", "net_device"),
    "qemu_binary": ("machine", "qemu_binary"), "disk_cache": ("machine", "disk_cache"),
    "disk_discard": ("machine", "disk_discard"),
    "ssh_username": ("communicator", "ssh_username"), "ssh_password": ("communicator", "ssh_password"),
    "ssh_port": ("communicator", "ssh_port"), "ssh_timeout": ("communicator", "ssh_timeout"),
    "ssh_wait_timeout": ("communicator", "ssh_timeout"),
    "ssh_private_key_file": ("communicator", "ssh_private_key_file"),
    "ssh_handshake_attempts": ("communicator", "ssh_handshake_attempts"),
    "pause_before_connecting": ("communicator", "pause_before_connecting"),
    "shutdown_command": ("shutdown", "command"), "shutdown_timeout": ("shutdown", "timeout"),
}
# builder keys with their own conversion (see QemuBuilder)
BUILDER_SPECIAL = ("iso_url", "iso_urls", "iso_checksum", "iso_checksum_type", "iso_checksum_url",
                   "disk_image", "use_backing_file", "disk_size", "accelerator", "format", "disk_compression",
                   "qemuargs", "firmware", "efi_boot", "disk_interface", "communicator", "vm_name")
BUILDER_NOT_NEEDED: dict[str, str] = {
    "type": "", "name": "",
    "headless": "baker always runs QEMU without a display",
    "display": "baker always runs QEMU without a display",
    "use_default_display": "baker always runs QEMU without a display",
    "vnc_bind_address": "baker types boot_command over QMP, there is no VNC",
    "vnc_port_min": "baker types boot_command over QMP, there is no VNC",
    "vnc_port_max": "baker types boot_command over QMP, there is no VNC",
    "http_port_min": "baker's HTTP server takes a free port on 127.0.0.1",
    "http_port_max": "baker's HTTP server takes a free port on 127.0.0.1",
    "http_bind_address": "baker's HTTP server listens on 127.0.0.1 only",
    "ssh_host_port_min": "QEMU picks a free forwarded port itself",
    "ssh_host_port_max": "QEMU picks a free forwarded port itself",
    "output_directory": "use `baker build --output-dir`",
    "skip_compaction": "baker trims free space in the guest and always writes standalone images",
    "efi_firmware_code": "baker finds OVMF through QEMU's firmware descriptors",
    "efi_firmware_vars": "baker finds OVMF through QEMU's firmware descriptors",
    "iso_skip_cache": "baker's download cache is content-addressed and verified",
}
PROVISIONER_COMMON = {"pause_before": "pause_before", "max_retries": "max_retries", "name": "name"}
SHELL_KEYS = {"inline": "inline", "script": "script", "scripts": "scripts", "expect_disconnect":
              "expect_disconnect", "valid_exit_codes": "valid_exit_codes", "remote_folder": "remote_folder",
              "timeout": "timeout"}
FILE_KEYS = {"source": "source", "destination": "destination", "direction": "direction", "content": "content"}
SHELL_LOCAL_KEYS = {"inline": "inline", "script": "script", "scripts": "scripts",
                    "valid_exit_codes": "valid_exit_codes", "timeout": "timeout"}
PROVISIONER_NOT_NEEDED = {"skip_clean": "baker removes uploaded scripts", "type": "",
                          "use_linux_pathing": "baker runs on Linux only"}
_DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
_ENV_KEYS = ("environment_vars", "env")
_PATH_KEYS = {"script", "scripts", "http_directory", "cd_files", "ssh_private_key_file"}


@dataclass
class Finding:
    line: int
    key: str
    message: str


@dataclass
class Conversion:
    template: dict[str, Any]
    mapped: list[str] = field(default_factory=list)  # packer key paths that were converted
    notes: list[Finding] = field(default_factory=list)  # known keys baker does not need, or caveats
    unmapped: list[Finding] = field(default_factory=list)


class Mapper:
    """One conversion; collects what it mapped, noted and could not map."""

    def __init__(self, doc: PackerDoc, src_dir: Path, out_dir: Path) -> None:
        self.doc = doc
        self.src_dir = src_dir
        self.out_dir = out_dir
        self.hcl = doc.syntax == "hcl2"
        self.result = Conversion(template={})

    # -- bookkeeping -------------------------------------------------------------------------------
    def unmapped(self, line: int, key: str, message: str) -> None:
        self.result.unmapped.append(Finding(line, key, message))

    def note(self, line: int, key: str, message: str) -> None:
        self.result.notes.append(Finding(line, key, message))

    def value(self, v: Any, line: int, key: str, *, execute: bool = False) -> Any:
        """Strings converted to baker's expressions, recursively; unknown expressions are reported."""
        if isinstance(v, str):
            text, unknown = convert_text(v, hcl=self.hcl, execute=execute)
            for expr in unknown:
                self.unmapped(line, key, f"expression {expr} has no baker equivalent; kept as literal text")
            return text
        if isinstance(v, list):
            return [self.value(x, line, key) for x in v]
        if isinstance(v, dict):
            return {str(k): self.value(x, line, key) for k, x in v.items()}
        return v

    def path(self, v: Any, line: int, key: str) -> Any:
        """A local path relative to the Packer template, rewritten relative to the output file."""
        if isinstance(v, list):
            return [self.path(x, line, key) for x in v]
        text = self.value(v, line, key)
        if not isinstance(text, str) or "{{" in text or "://" in text or os.path.isabs(text) or not text:
            return text
        rebased = os.path.relpath(self.src_dir / text, self.out_dir)
        return rebased + "/" if text.endswith("/") and not rebased.endswith("/") else rebased

    # -- the whole template ------------------------------------------------------------------------
    def run(self) -> Conversion:
        t = self.result.template
        qemu = [b for b in self.doc.builders if b.type == "qemu"]
        for b in self.doc.builders:
            if b is not (qemu[0] if qemu else None):
                why = ("a baker template has one source; import the others separately" if b.type == "qemu"
                       else f"baker builds with QEMU only; the {b.type!r} builder has no equivalent")
                self.unmapped(b.body.line, b.where, why)
        if not qemu:
            return self.result
        t["name"] = ""
        if self.doc.description:
            t["description"] = self.value(self.doc.description, 1, "description")
            self.result.mapped.append("description")
        variables = self.variables(self.doc.variables)
        if variables:
            t["variables"] = variables
        QemuBuilder(self, qemu[0]).convert(t)
        provisioners = [p for pl in self.doc.provisioners for p in self.provisioner(pl)]
        if provisioners:
            t["provisioners"] = provisioners
        for pp in self.doc.post_processors:
            self.post_processor(pp, t)
        for what, line, why in self.doc.leftovers:
            self.unmapped(line, what, why)
        for what, line, why in self.doc.notes:
            self.note(line, what, why)
        self.result.unmapped.sort(key=lambda f: f.line)
        self.result.notes.sort(key=lambda f: f.line)
        order = ["name", "description", "variables", "source", "machine", "communicator", "provisioners",
                 "shutdown", "exports", "post"]
        self.result.template = {k: t[k] for k in order if k in t}
        return self.result

    # -- variables -----------------------------------------------------------------------------------
    def variables(self, packer_vars: list[PackerVar]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for v in packer_vars:
            spec: dict[str, Any] = {}
            kind = _var_type(v.type, v.default)
            if kind:
                spec["type"] = kind
            if v.description:
                spec["description"] = v.description
            if v.sensitive:
                spec["sensitive"] = True
            if v.has_default:
                default = v.default
                if isinstance(default, str):
                    converted, unknown = convert_text(default, hcl=self.hcl)
                    if unknown or converted != default.replace("$${", "${"):
                        self.unmapped(v.line, f"variables.{v.name}.default",
                                      f"a default computed from {default!r}: baker's defaults are plain "
                                      f"values; pass it with -var or BAKER_VAR_{v.name}")
                        default = ""
                spec["default"] = default
            else:
                spec["required"] = True
            for key, line in v.extra.items():
                self.unmapped(line, f"variable.{v.name}.{key}", "no baker equivalent")
            out[v.name] = spec
            self.result.mapped.append(f"variables.{v.name}")
        return out

    # -- provisioners --------------------------------------------------------------------------------
    def provisioner(self, pl: Plugin) -> list[dict[str, Any]]:
        body = pl.body
        if pl.type not in ("shell", "file", "shell-local"):
            self.unmapped(body.line, pl.where, f"provisioner type {pl.type!r} has no baker equivalent "
                          "(baker has shell, file and shell-local)")
            return []
        out: dict[str, Any] = {"type": pl.type}
        keys = {**PROVISIONER_COMMON, **{"shell": SHELL_KEYS, "file": FILE_KEYS,
                                         "shell-local": SHELL_LOCAL_KEYS}[pl.type]}
        if pl.type == "file":
            keys.pop("timeout", None)
        for key, value in body.items():
            line, where = body.at(key), f"{pl.where}.{key}"
            if key in keys:
                target = keys[key]
                download = body.get("direction") == "download"
                host_side = pl.type == "file" and key == ("destination" if download else "source")
                out[target] = self.path(value, line, where) if key in _PATH_KEYS or host_side \
                    else self.value(value, line, where)
                if key == "inline" and isinstance(out[target], str):
                    out[target] = [out[target]]
            elif key in _ENV_KEYS:
                out["environment"] = {**out.get("environment", {}), **self._env(value, line, where)}
            elif pl.type == "shell" and key == "execute_command":
                self._execute_command(value, line, where, out)
                continue
            elif pl.type == "shell-local" and key == "command":
                out["inline"] = [self.value(value, line, where)]
            elif pl.type == "file" and key == "sources":
                continue  # handled below
            elif key in PROVISIONER_NOT_NEEDED:
                if PROVISIONER_NOT_NEEDED[key]:
                    self.note(line, where, PROVISIONER_NOT_NEEDED[key])
                continue
            else:
                self.unmapped(line, where, _why_provisioner_key(key))
                continue
            self.result.mapped.append(where)
        if pl.type == "shell" and "execute_command" not in body:
            out["sudo"] = False  # Packer runs scripts as ssh_username without sudo
        if pl.type == "file" and isinstance(body.get("sources"), list):
            line, where = body.at("sources"), f"{pl.where}.sources"
            self.result.mapped.append(where)
            dest = str(out.get("destination", ""))
            return [{**out, "source": self.path(s, line, where), "destination": dest}
                    for s in body["sources"]]
        return [out]

    def _env(self, value: Any, line: int, where: str) -> dict[str, str]:
        if isinstance(value, dict):
            return {str(k): str(self.value(v, line, where)) for k, v in value.items()}
        out = {}
        for item in value if isinstance(value, list) else []:
            k, _, v = str(item).partition("=")
            out[k] = self.value(v, line, where)
        return out

    def _execute_command(self, value: Any, line: int, where: str, out: dict[str, Any]) -> None:
        text = str(value)
        self.result.mapped.append(where)
        if "sudo" in text:
            out["sudo"] = True  # baker's default runs the script through `sudo -n env VARS script`
            self.note(line, where, "runs through sudo: mapped to sudo: true (baker's own execute_command)")
            return
        out["sudo"] = False
        out["execute_command"] = self.value(text, line, where, execute=True)

    # -- post-processors -----------------------------------------------------------------------------
    def post_processor(self, pp: Plugin, t: dict[str, Any]) -> None:
        body, exports = pp.body, t.setdefault("exports", [])
        handled: set[str] = {"type", "name", "keep_input_artifact"}
        if pp.type == "checksum":
            types = body.get("checksum_types", ["md5"])  # Packer's default
            types = types if isinstance(types, list) else [types]
            good = [x for x in types if x in _DIGESTS]
            for bad in (x for x in types if x not in _DIGESTS):
                self.unmapped(body.at("checksum_types"), f"{pp.where}.checksum_types", f"digest {bad!r} "
                              f"is not supported (baker has {', '.join(_DIGESTS)})")
            t.setdefault("post", []).append({"type": "checksum", "types": good or ["sha512"]})
            handled |= {"checksum_types"}
            if "output" in body:
                self.note(body.at("output"), f"{pp.where}.output", "baker names the files <ALGO>SUMS "
                          "(e.g. SHA512SUMS) in the output dir")
                handled.add("output")
        elif pp.type == "vagrant":
            provider = body.get("provider_override", "libvirt")
            if provider not in ("libvirt", "virtualbox"):
                self.unmapped(body.at("provider_override"), f"{pp.where}.provider_override",
                              f"baker makes libvirt and virtualbox boxes, not {provider!r}")
                provider = "libvirt"
            exports.append({"type": "vagrant", "provider": provider})
            handled |= {"provider_override"}
            for key in ("output", "compression_level"):
                if key in body:
                    self.note(body.at(key), f"{pp.where}.{key}", "baker names the box "
                              "<name>-<version>-<provider>.box and writes a versioned catalog beside it")
                    handled.add(key)
        elif pp.type == "compress":
            qcow2 = next((e for e in exports if e["type"] == "qcow2"), None)
            if qcow2 is None:
                qcow2 = {"type": "qcow2"}
                exports.append(qcow2)
            qcow2["compress"] = True
            self.note(body.line, pp.where, "mapped to a compressed qcow2 (zlib inside the image, still "
                      "bootable) instead of an archive")
            handled |= {"output", "format", "compression_level"}
        elif pp.type == "shell-local":
            step = self.provisioner(Plugin("shell-local", body, pp.where))
            t.setdefault("post", []).extend(step)
            return
        elif pp.type == "manifest":
            self.note(body.line, pp.where, "baker always writes manifest.json beside the artifacts")
            handled |= {"output", "strip_path", "custom_data"}
        else:
            self.unmapped(body.line, pp.where, f"post-processor {pp.type!r} has no baker equivalent; "
                          "a post: shell-local step can run its CLI (artifact paths are in $BAKER_ARTIFACTS)")
            return
        self.result.mapped.append(pp.where)
        if "keep_input_artifact" in body:
            self.note(body.at("keep_input_artifact"), f"{pp.where}.keep_input_artifact",
                      "baker keeps every export")
        for key in body:
            if key not in handled:
                self.unmapped(body.at(key), f"{pp.where}.{key}", "no baker equivalent")


class QemuBuilder:
    """The `qemu` builder's keys → source, machine, communicator, shutdown and exports."""

    def __init__(self, m: Mapper, pl: Plugin) -> None:
        self.m = m
        self.pl = pl
        self.b: Obj = pl.body

    def at(self, key: str) -> tuple[int, str]:
        return self.b.at(key), f"{self.pl.where}.{key}"

    def mapped(self, key: str) -> None:
        self.m.result.mapped.append(f"{self.pl.where}.{key}")

    def convert(self, t: dict[str, Any]) -> None:
        m, b = self.m, self.b
        names = ("source", "machine", "communicator", "shutdown")
        sections: dict[str, dict[str, Any]] = {k: {} for k in names}
        for key, value in b.items():
            line, where = self.at(key)
            if key in BUILDER_KEYS:
                section, target = BUILDER_KEYS[key]
                convert = m.path if key in _PATH_KEYS else m.value
                sections[section][target] = convert(value, line, where)
                if key == "memory" and isinstance(value, str) and value.isdigit():
                    sections[section][target] = int(value)
                if key == "cd_label" and str(value).lower() == "cidata":
                    m.note(line, where, "baker writes its own cloud-init seed (for its build user and host "
                           "key); move your user-data into source.cloud_init.user_data")
                self.mapped(key)
            elif key in BUILDER_NOT_NEEDED:
                if BUILDER_NOT_NEEDED[key]:
                    m.note(line, where, BUILDER_NOT_NEEDED[key])
            elif key not in BUILDER_SPECIAL:
                m.unmapped(line, where, _why_builder_key(key))
        t["name"] = self.name()
        t["source"] = {**self.base(), **sections["source"]}
        machine = {**self.machine(), **sections["machine"]}
        for name, section in (("machine", machine), ("communicator", {**self.communicator(),
                                                                      **sections["communicator"]}),
                              ("shutdown", sections["shutdown"])):
            if section:
                t[name] = section
        t["exports"] = self.exports()

    def name(self) -> str:
        for key in ("vm_name", "name"):
            raw = self.b.get(key)
            if isinstance(raw, str) and raw and "{{" not in raw and "${" not in raw:
                self.mapped(key) if key == "vm_name" else None
                return re.sub(r"[^A-Za-z0-9._-]+", "-", re.sub(r"\.(qcow2|raw|img)$", "", raw)).strip("-.")
            if key == "vm_name" and raw:
                line, where = self.at(key)
                self.m.unmapped(line, where, f"vm_name {raw!r} is computed; baker's name must be fixed "
                                "text (it names the output files), so the source name is used")
        if self.pl.name:
            return re.sub(r"[^A-Za-z0-9._-]+", "-", self.pl.name)
        return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.m.doc.file).name.split(".")[0]) or "imported"

    def base(self) -> dict[str, Any]:
        m, b = self.m, self.b
        checksum = self.checksum()
        url_key = "iso_url" if "iso_url" in b else "iso_urls" if "iso_urls" in b else None
        if url_key is None:
            m.unmapped(b.line, self.pl.where, "no iso_url or iso_urls: give the source by hand")
        line, where = self.at(url_key or "iso_url")
        urls = b.get(url_key) if url_key else ""
        urls = [self._location(u, line, where) for u in (urls if isinstance(urls, list) else [urls])]
        if url_key:
            self.mapped(url_key)
        if b.get("disk_image") in (True, "true"):
            self.mapped("disk_image")
            if len(urls) > 1:
                m.unmapped(line, where, "baker's cloud_image takes one URL; the first is used")
            src: dict[str, Any] = {"url": urls[0] if urls else ""}
            if checksum is not None:
                src["checksum"] = checksum
            if "use_backing_file" in b:
                self.mapped("use_backing_file")
                if b["use_backing_file"] in (True, "true"):
                    src["disk_mode"] = "overlay"
            return {"cloud_image": src}
        if "disk_image" in b:
            self.mapped("disk_image")
        iso: dict[str, Any] = {"iso_url": urls[0]} if len(urls) == 1 else {"iso_urls": urls}
        if checksum is not None:
            iso["iso_checksum"] = checksum
        return {"iso": iso}

    def _location(self, url: Any, line: int, where: str) -> Any:
        if isinstance(url, str) and "://" not in url:
            return self.m.path(url, line, where)
        return self.m.value(url, line, where)

    def checksum(self) -> str | None:
        b, m = self.b, self.m
        kind = b.get("iso_checksum_type")
        for key in ("iso_checksum", "iso_checksum_type", "iso_checksum_url"):
            if key in b:
                self.mapped(key)
        if "iso_checksum_url" in b:
            line, where = self.at("iso_checksum_url")
            return "file:" + str(self._location(b["iso_checksum_url"], line, where))
        if "iso_checksum" not in b:
            return None
        line, where = self.at("iso_checksum")
        raw = str(b["iso_checksum"])
        if raw.startswith("file:"):
            return "file:" + str(self._location(raw[5:], line, where))
        value = str(m.value(raw, line, where))
        return f"{kind}:{value}" if kind and kind != "none" and ":" not in value else value

    def machine(self) -> dict[str, Any]:
        m, b = self.m, self.b
        out: dict[str, Any] = {}
        if "disk_size" in b:
            line, where = self.at("disk_size")
            size = m.value(b["disk_size"], line, where)
            # Packer's unit-less disk_size is MiB; baker's is bytes
            out["disk_size"] = f"{size}M" if isinstance(size, int) or str(size).isdigit() else size
            self.mapped("disk_size")
        if "accelerator" in b:
            line, where = self.at("accelerator")
            accel = str(b["accelerator"])
            if accel in ("kvm", "tcg"):
                out["accelerator"] = accel
            elif accel == "none":
                out["accelerator"] = "tcg"
            else:
                m.unmapped(line, where, f"accelerator {accel!r}: baker runs kvm or tcg (auto picks one)")
            self.mapped("accelerator")
        if "qemuargs" in b:
            line, where = self.at("qemuargs")
            args = b["qemuargs"]
            out["qemuargs"] = [str(m.value(w, line, where)) for a in (args if isinstance(args, list) else [])
                               for w in (a if isinstance(a, list) else [a])]
            m.note(line, where, "baker appends qemuargs to its own arguments instead of replacing them; "
                   "drop any that repeat machine: settings (-m, -smp, -drive)")
            self.mapped("qemuargs")
        if "disk_interface" in b:
            line, where = self.at("disk_interface")
            value = str(b["disk_interface"])
            if value in ("virtio", "virtio-scsi", "ide", "sata"):
                out["disk_interface"] = value
                self.mapped("disk_interface")
            else:
                m.unmapped(line, where, f"disk_interface {value!r}: baker has virtio, virtio-scsi, ide, sata")
        efi = b.get("efi_boot") in (True, "true")
        if "firmware" in b:
            line, where = self.at("firmware")
            if re.search(r"ovmf|efi", str(b["firmware"]), re.I):
                efi = True
                m.note(line, where, "mapped to firmware: uefi; baker finds OVMF itself")
            else:
                m.unmapped(line, where, "a firmware file other than OVMF has no baker equivalent")
            self.mapped("firmware")
        if "efi_boot" in b:
            self.mapped("efi_boot")
        if efi:
            out["firmware"] = "uefi"
        return out

    def communicator(self) -> dict[str, Any]:
        if "communicator" not in self.b:
            return {}
        line, where = self.at("communicator")
        value = str(self.b["communicator"])
        if value in ("ssh", "none"):
            self.mapped("communicator")
            return {"type": "none"} if value == "none" else {}
        self.m.unmapped(line, where, f"communicator {value!r}: baker talks SSH only")
        return {}

    def exports(self) -> list[dict[str, Any]]:
        fmt = str(self.b.get("format", "qcow2"))
        if "format" in self.b:
            self.mapped("format")
        if fmt not in ("qcow2", "raw"):
            line, where = self.at("format")
            self.m.unmapped(line, where, f"format {fmt!r}: baker exports qcow2, raw, vmdk, vhd, vhdx, ova, "
                            "... as exports: entries; qcow2 is used")
            fmt = "qcow2"
        export: dict[str, Any] = {"type": fmt}
        if self.b.get("disk_compression") in (True, "true") and fmt == "qcow2":
            export["compress"] = True
        if "disk_compression" in self.b:
            self.mapped("disk_compression")
        return [export]


def _var_type(packer_type: str | None, default: Any) -> str | None:
    t = (packer_type or "").strip()
    if t.startswith(("list", "set", "tuple")):
        return "list"
    if t.startswith(("map", "object")):
        return "map"
    if t == "number":
        return "int" if isinstance(default, int) and not isinstance(default, bool) else "float"
    if t == "bool":
        return "bool"
    if t == "string":
        return "string"
    return None


def _why_builder_key(key: str) -> str:
    if key.startswith("floppy"):
        return "baker has no floppy; put the files on a CD with cd_files/cd_content"
    if key.startswith(("winrm", "communicator_")):
        return "baker talks SSH only"
    if key.startswith("ssh_"):
        return "this SSH option has no baker equivalent"
    return "no baker equivalent"


def _why_provisioner_key(key: str) -> str:
    if key in ("only", "except", "override", "only_on"):
        return "a baker template builds one source, so there is nothing to select"
    if key == "inline_shebang":
        return "baker runs inline commands with /bin/sh -e"
    return "no baker equivalent"
