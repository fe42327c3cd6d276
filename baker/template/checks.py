"""Checks across fields, and local paths: what a well-typed template can still get wrong.

Each check points at the key the user has to edit. Checks skip parts that already failed to convert,
so one typo does not cause a cascade of follow-up errors.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from pathlib import Path
from typing import Any

from baker.checksum import ALGOS, ChecksumSpecError, parse_checksum
from baker.errors import Mark
from baker.template.model import (
    POLICY_CHECKS,
    CommunicatorConfig,
    FileProvisioner,
    ShellLocalProvisioner,
    ShellProvisioner,
    SignConfig,
    Source,
    Template,
)
from baker.template.yamlnodes import Problems, did_you_mean

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_MODE = re.compile(r"0?[0-7]{3,4}")
_LOCALE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?(@[a-z]+)?")
CHECKSUM_HINT = ("write none, <algo>:<hex> (" + ", ".join(f"{a}: {n} hex digits" for a, n in ALGOS.items())
                 + "), bare hex (type from its length), or file:<url-or-path> of a SUMS file")
# (class, field) pairs whose local paths must exist when the template is loaded
_MUST_EXIST = {
    (ShellProvisioner, "script"), (ShellProvisioner, "scripts"),
    (ShellLocalProvisioner, "script"), (ShellLocalProvisioner, "scripts"),
    (FileProvisioner, "source"), (Source, "http_directory"), (Source, "cd_files"),
    (SignConfig, "key"),
    (Source, "kernel"), (Source, "initrd"), (CommunicatorConfig, "ssh_private_key_file"),
}


class Where:
    """Marks for key paths, falling back to the nearest parent that has one."""

    def __init__(self, marks: dict[str, Mark], problems: Problems, root: Mark) -> None:
        self.marks = marks
        self.problems = problems
        self.root = root

    def __call__(self, path: str) -> Mark:
        while path:
            if path in self.marks:
                return self.marks[path]
            path = re.sub(r"(\.[^.\[]+|\[[^\]]*\])$", "", path) if re.search(r"[.\[]", path) else ""
        return self.root

    def error(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.add(message, self(path), path, hint)


def checksum_problem(value: str) -> str | None:
    """Why a checksum string is malformed, or None when it is fine (the fetcher's own grammar)."""
    try:
        parse_checksum(value)
    except ChecksumSpecError as e:
        return e.problem
    return None


def resolve_paths(obj: Any, path: str, template_dir: Path, where: Where,
                  dirs: dict[str, Path] | None = None) -> None:
    """Make `path` fields absolute against the folder of the file that sets them (the template's,
    or an included fragment's: `dirs` maps a file's display name to its folder); check the ones a
    build reads."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            resolve_paths(item, f"{path}[{i}]", template_dir, where, dirs)
        return
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        fpath = f"{path}.{f.name}" if path else f.name
        if not f.metadata.get("path"):
            if dataclasses.is_dataclass(value) or isinstance(value, list):
                resolve_paths(value, fpath, template_dir, where, dirs)
            continue
        if isinstance(obj, FileProvisioner) and f.name == "source" and obj.direction == "download":
            continue  # a path inside the guest
        check = (type(obj), f.name) in _MUST_EXIST and not where.problems.has_error_under(fpath)
        def base(p: str) -> Path:
            mark = where.marks.get(p)
            return (dirs or {}).get(mark.file, template_dir) if mark is not None else template_dir

        if isinstance(value, str):
            d = base(fpath)
            setattr(obj, f.name, _resolve(value, fpath, d, where, check,
                                          "template" if d == template_dir else "fragment"))
        elif isinstance(value, list):
            out = []
            for i, v in enumerate(value):
                d = base(f"{fpath}[{i}]")
                out.append(_resolve(v, f"{fpath}[{i}]", d, where, check,
                                    "template" if d == template_dir else "fragment"))
            setattr(obj, f.name, out)


def _resolve(value: str, path: str, template_dir: Path, where: Where, check: bool,
             what: str = "template") -> str:
    p = Path(os.path.expanduser(value))
    full = os.path.normpath(p if p.is_absolute() else template_dir / p)
    if check:
        if glob.has_magic(value):
            if not glob.glob(full, recursive=True):
                where.error(path, f"no file matches '{value}' (looked for {full})",
                            f"paths are relative to the {what}'s folder {template_dir}")
        elif not os.path.exists(full):
            where.error(path, f"file not found: '{value}' (looked for {full})",
                        f"paths are relative to the {what}'s folder {template_dir}")
    # a trailing slash is meaningful (file provisioner: upload the folder's contents, as Packer does)
    return full + "/" if value.endswith("/") and not full.endswith("/") else full


def _check_image_ref(t: Template, where: Where) -> None:
    """A parent template must exist and not be the template itself (a store reference is checked
    when the build resolves it: the store may live elsewhere)."""
    ref = str(t.source.image).strip()
    if not ref:
        where.error("source.image", "source.image is empty", "a template path or name[@version|@channel]")
        return
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        p = Path(os.path.abspath(t.path.parent / ref))
        if not p.is_file():
            where.error("source.image", f"the parent template {ref} does not exist ({p})",
                        "paths are relative to this template's folder")
        elif p == t.path:
            where.error("source.image", "a template cannot build on itself")


def check(t: Template, where: Where) -> None:
    """Cross-field rules; each error names the key to change."""
    bad = where.problems.has_error_under
    if not bad("name") and t.name and (not _SAFE_NAME.fullmatch(t.name) or t.name in (".", "..")):
        where.error("name", f"name '{t.name}' is not a safe file name",
                    "use letters, digits, '.', '_' and '-' (it names output files)")

    src = t.source
    if not bad("source"):
        given = [k for k in ("cloud_image", "iso", "image") if getattr(src, k) is not None]
        if not given:
            where.error("source", "no base to build from: add source.cloud_image (a disk image URL), "
                        "source.iso (an installer ISO) or source.image (another template's image)")
        elif len(given) > 1:
            where.error(f"source.{given[1]}", f"source.{given[0]} and source.{given[1]} are both set; "
                        "keep only one")
    if src.image is not None and not bad("source.image"):
        _check_image_ref(t, where)
    if src.iso is not None and not bad("source.iso"):
        if not src.iso.iso_url and not src.iso.iso_urls:
            where.error("source.iso", "source.iso needs iso_url (or iso_urls, mirrors tried in order)")
        elif src.iso.iso_url and src.iso.iso_urls:
            where.error("source.iso.iso_urls", "give iso_url or iso_urls, not both")
    for cpath, value in (("source.cloud_image.checksum", src.cloud_image and src.cloud_image.checksum),
                         ("source.iso.iso_checksum", src.iso and src.iso.iso_checksum)):
        if isinstance(value, str) and not bad(cpath):
            problem = checksum_problem(value)
            if problem:
                where.error(cpath, f"invalid checksum: {problem}", CHECKSUM_HINT)

    m = t.machine
    if not bad("machine.cpus") and m.cpus < 1:
        where.error("machine.cpus", f"cpus must be at least 1, got {m.cpus}")
    if not bad("machine.memory") and m.memory < 128:
        where.error("machine.memory", f"memory is in MiB and must be at least 128, got {m.memory}",
                    "e.g. memory: 2048")
    if m.secure_boot and m.firmware != "uefi" and not bad("machine"):
        where.error("machine.secure_boot", "secure_boot needs UEFI firmware", "add machine.firmware: uefi")

    c = t.communicator
    if not bad("communicator.ssh_port") and not 1 <= c.ssh_port <= 65535:
        where.error("communicator.ssh_port", f"ssh_port must be 1-65535, got {c.ssh_port}")
    if c.type == "none":
        for i, p in enumerate(t.provisioners):
            if not isinstance(p, ShellLocalProvisioner):
                where.error("communicator.type", f"communicator.type is none, but provisioners[{i}] "
                            f"({p.type}) needs to reach the guest",
                            "use communicator.type: ssh, or keep only shell-local provisioners")
                break

    for i, p in enumerate(t.provisioners):
        ppath = f"provisioners[{i}]"
        if bad(ppath):
            continue
        if isinstance(p, ShellProvisioner | ShellLocalProvisioner):
            given = [k for k in ("inline", "script", "scripts") if getattr(p, k)]
            if not given:
                where.error(ppath, f"a {p.type} provisioner needs one of inline, script or scripts")
            elif len(given) > 1:
                where.error(f"{ppath}.{given[1]}", f"give only one of inline, script or scripts "
                            f"(found {' and '.join(given)})")
        if isinstance(p, FileProvisioner):
            if p.source is None and p.content is None:
                where.error(ppath, "a file provisioner needs source (a local file) or content (text)")
            elif p.source is not None and p.content is not None:
                where.error(f"{ppath}.content", "give source or content, not both")
            if p.direction == "download" and p.content is not None:
                where.error(f"{ppath}.content", "direction: download copies a guest file to the host; "
                            "content is only for uploads")
            if not p.destination:
                where.error(f"{ppath}.destination", "a file provisioner needs a destination",
                            "e.g. destination: /etc/nginx/nginx.conf")
            if p.mode is not None and not _MODE.fullmatch(p.mode):
                where.error(f"{ppath}.mode", f"mode '{p.mode}' is not an octal file mode",
                            "quote it so YAML keeps it as text: mode: \"0644\"")
        if getattr(p, "max_retries", 0) < 0:
            where.error(f"{ppath}.max_retries", "max_retries must not be negative")

    for i, loc in enumerate(t.generalize.minimize.locales):
        lpath = f"generalize.minimize.locales[{i}]"
        if not bad(lpath) and not _LOCALE.fullmatch(loc):
            where.error(lpath, f"'{loc}' is not a locale name", "e.g. en, en_GB, pt_BR, sr@latin")

    _check_lifecycle(t, where)


def checkpoints_unsupported(t: Template) -> tuple[str, str] | None:
    """Why this template cannot use checkpoints, as (message, hint); None when it can.

    A checkpoint is the disk after a provisioner, and a resumed build boots that disk and goes on over
    SSH. An installer ISO would boot the installer again, and without SSH there is nothing to resume.
    One answer for the template check (`checkpoints: true`), the `--checkpoint` warning and the plan.
    """
    src = t.source
    if src.iso is not None and src.cloud_image is None and not src.image:
        return ("checkpoints do not work with an installer ISO source",
                "a resumed build would boot the installer again; bake the installed system once, then "
                "build on it with source: {image: ...} (checkpoints work there)")
    if t.communicator.type != "ssh":
        return ("checkpoints need the ssh communicator",
                "without SSH nothing runs step by step in the guest, so there is nothing to resume")
    if src.cloud_image is None and not src.image:
        return ("checkpoints need a cloud_image or image source", "a resumed build boots the saved disk")
    return None


def _check_lifecycle(t: Template, where: Where) -> None:
    bad = where.problems.has_error_under
    if not bad("policy"):
        for key in ("fail_on", "ignore"):
            for i, name in enumerate(getattr(t.policy, key)):
                if name not in POLICY_CHECKS and not (key == "fail_on" and name == "all"):
                    where.error(f"policy.{key}[{i}]", f"unknown policy check '{name}'"
                                f"{did_you_mean(name, POLICY_CHECKS)}",
                                f"checks: {', '.join(POLICY_CHECKS)}"
                                + (", or all" if key == "fail_on" else ""))
        if t.policy.max_security_updates is not None and t.policy.max_security_updates < 0:
            where.error("policy.max_security_updates", "max_security_updates must not be negative")
        for i, port in enumerate(t.policy.allowed_ports or []):
            if not 1 <= port <= 65535:
                where.error(f"policy.allowed_ports[{i}]", f"port must be 1-65535, got {port}")
    if t.scan is not None and not bad("scan") and not t.scan.command:
        where.error("scan", "scan needs a command (an argv list)",
                    'e.g. scan: {command: [sh, -c, "grype sbom:$BAKER_SBOM --fail-on high"]}')
    if t.checkpoints and (why := checkpoints_unsupported(t)) is not None:
        where.error("checkpoints", *why)
    if t.sign is not None and not bad("sign") and (not t.sign.key or os.path.isdir(t.sign.key)):
        where.error("sign", "sign needs a key: the path of an OpenSSH ed25519 private key",
                    "create one with: ssh-keygen -t ed25519 -N '' -f baker-signing-key")
