"""The typed template model: what a YAML template means once loaded, rendered and validated.

Field names keep Packer's words where Packer users have muscle memory (iso_url, boot_command,
ssh_timeout, shutdown_command, valid_exit_codes, ...). Field metadata conventions used by the loader:
  - metadata={"late": True}: rendered at build time (needs build.* values such as build.http_port)
  - metadata={"duration": True} / {"size": True}: string parsed with baker.units, kept as given
  - metadata={"path": True}: relative paths resolve against the template's folder
  - metadata={"aliases": [...]}: other accepted key names (Packer's spelling)
  - metadata={"argv": True}: a flat list of words, or Packer's list of lists (flattened)
  - metadata={"tagged_by": "type"}: a union of dataclasses; that key's Literal value picks the class
  - metadata={"help": "..."}: what the key does, for `baker docs` and the JSON Schema (baker.reference);
    every template key has one (tests/test_reference.py). Fields are declared with baker.options.help_field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from baker.errors import Mark
from baker.options import help_field as opt


@dataclass
class Variable:
    """A template input. Precedence (low→high): default, BAKER_VAR_<name>, --var-file, -var."""

    default: Any = opt(None, "value used when nothing else sets it; a secret's default is masked too")
    type: Literal["string", "int", "float", "bool", "list", "map"] = opt(
        "string", "values from the environment or -var are coerced to it (default: the default's type)")
    required: bool = opt(False, "fail when no source gives it a value")
    sensitive: bool = opt(False, "mask the value in logs, errors, inspect and the manifest")
    description: str = opt("", "what the variable is for")


@dataclass
class CloudImageSource:
    """A bootable disk image (qcow2/raw) used as the base, like Packer's disk_image=true."""

    url: str = opt(text="URL (https, http, file) or local path of the base image; downloads are cached")
    checksum: str = opt("none", "sha256:<hex>, sha512:<hex>, file:<URL of a SUMS file>, or none",
                        aliases=["iso_checksum"])
    format: Literal["auto", "qcow2", "raw"] = opt("auto", "image format; auto probes it with qemu-img")
    disk_mode: Literal["overlay", "copy"] = opt(
        "overlay", "overlay: a qcow2 backed by the cached base (fast, small); copy: a standalone full copy")


@dataclass
class IsoSource:
    """An installer ISO; the target disk starts empty and boots CD-first."""

    iso_url: str | None = opt(None, "URL or local path of the ISO", aliases=["url"])
    iso_urls: list[str] = opt([], "mirrors tried in order (after iso_url)", aliases=["urls"])
    iso_checksum: str = opt("none", "sha256:<hex>, sha512:<hex>, file:<URL of a SUMS file>, or none",
                            aliases=["checksum"])


@dataclass
class CloudInitConfig:
    """User-supplied cloud-init data, merged into the seed baker writes for its build user."""

    enabled: bool = opt(True, "attach the NoCloud seed (turn off for ISO installs that make their own user)")
    user_data: dict[str, Any] = opt({}, "cloud-config merged over baker's (build user, SSH key, host key)")
    meta_data: dict[str, Any] = opt({}, "NoCloud meta-data merged over baker's (instance-id, hostname)")
    network_config: dict[str, Any] | None = opt(None, "NoCloud network-config (version 2); none: DHCP")
    lean_boot: bool = opt(
        True, "skip cloud-init's config and final modules on the build boot (each clone runs them at its "
              "own first boot); off when user_data needs one baker does not know")


@dataclass
class Source:
    """What the VM boots from (one of cloud_image, iso or image) and how its boot is driven."""

    cloud_image: CloudImageSource | None = opt(None, "boot a cloud disk image")
    image: str | None = opt(
        None, "build a layer on another image: a template path (e.g. debian-12-golden.yaml; built first "
              "when its inputs changed) or a stored image: name, name@version or name@channel")
    iso: IsoSource | None = opt(None, "install from an ISO onto an empty disk")
    cloud_init: CloudInitConfig = opt(factory=CloudInitConfig, text="the cloud-init seed")
    boot_command: list[str] = opt(
        [], "keys typed through QMP after boot_wait: Packer syntax (<enter>, <wait5>) plus "
            '<waitFor "text">', late=True)
    boot_wait: str = opt("0s", "wait this long after power-on before typing boot_command", duration=True)
    boot_key_interval: str = opt(
        "50ms", "pause between keys (QEMU's PS/2 buffer is tiny; below 50ms keys drop on a loaded host)",
        duration=True)
    http_directory: str | None = opt(
        None, "served on 127.0.0.1 (the guest sees 10.0.2.2, {{ build.http_ip }}:{{ build.http_port }})",
        path=True)
    http_content: dict[str, str] = opt({}, "URL path -> content served by the same HTTP server", late=True)
    cd_files: list[str] = opt([], "files and folders put on an extra CD-ROM (kickstart, autounattend, ...)",
                              path=True)
    cd_content: dict[str, str] = opt({}, "file name -> content on the extra CD-ROM", late=True)
    cd_label: str = opt("baker", "volume label of the extra CD-ROM")
    kernel: str | None = opt(None, "direct kernel boot: the kernel", path=True)
    initrd: str | None = opt(None, "direct kernel boot: the initrd", path=True)
    append: str | None = opt(None, "direct kernel boot: the kernel command line", late=True)


@dataclass
class MachineConfig:
    """The QEMU virtual machine the build runs in."""

    accelerator: Literal["auto", "kvm", "tcg"] = opt(
        "auto", "auto: KVM when it really runs the guest, else TCG with a warning")
    cpus: int = opt(2, "virtual CPUs")
    memory: int = opt(2048, "memory in MiB, as Packer")
    disk_size: str = opt("8G", "size of the built disk (a cloud image is grown to it)", size=True)
    disk_interface: Literal["virtio", "virtio-scsi", "ide", "sata"] = opt("virtio", "disk controller")
    disk_cache: Literal["writeback", "writethrough", "none", "unsafe", "directsync"] = opt(
        "unsafe", "QEMU cache mode; unsafe is fastest and safe here because baker syncs on shutdown")
    disk_discard: Literal["unmap", "ignore"] = opt("unmap", "unmap: trimmed blocks shrink the image")
    machine_type: str = opt("q35", "QEMU machine type (-machine)")
    cpu_model: str | None = opt(None, "QEMU CPU model (-cpu); default: host with KVM, max with TCG")
    firmware: Literal["bios", "uefi"] = opt("bios", "uefi uses OVMF and keeps its variable store")
    secure_boot: bool = opt(False, "uefi only: OVMF with Secure Boot and Microsoft keys enrolled")
    net_device: str = opt("virtio-net-pci", "NIC model on user-mode networking")
    qemu_binary: str = opt("qemu-system-x86_64", "the QEMU system emulator to run")
    qemuargs: list[str] = opt([], "extra argv words appended to baker's own (never replacing them); "
                                  "Packer's list of lists is flattened", argv=True)
    screendump_interval: str = opt(
        "0s", "save a PNG of the screen every interval while waiting for SSH (0s: only on failure)",
        duration=True)


@dataclass
class CommunicatorConfig:
    """How baker reaches the guest to provision it."""

    type: Literal["ssh", "none"] = opt("ssh", "none: no provisioners, only boot_command and shutdown")
    ssh_username: str = opt("baker", "build user; cloud-init creates it with baker's generated key")
    ssh_password: str | None = opt(None, "password login instead of the generated key")
    ssh_private_key_file: str | None = opt(None, "use this key instead of a generated one", path=True)
    ssh_port: int = opt(22, "SSH port inside the guest (forwarded to a free host port)")
    ssh_timeout: str = opt("10m", "how long to wait for SSH after boot", duration=True)
    ssh_handshake_attempts: int = opt(100, "connection attempts before giving up")
    host_key_check: Literal["strict", "off"] = opt(
        "strict", "strict: the guest must present the host key baker injected (cloud-init) or pinned")
    pause_before_connecting: str = opt("0s", "wait this long once SSH answers, before connecting",
                                       duration=True)


# fields the provisioner types share, each declared once: `name: ... = opt(**_SHARED["name"])`
_SHARED: dict[str, dict[str, Any]] = {
    "name": {"text": "shown in the build log instead of the step number"},
    "inline": {"default": [], "text": "commands run one after another in one shell script"},
    "script": {"text": "a script file to run", "path": True},
    "scripts": {"default": [], "text": "script files run in order", "path": True},
    "environment": {"default": {}, "text": "environment variables (a mapping, or Packer's list of KEY=VALUE)",
                    "aliases": ["environment_vars"]},
    "valid_exit_codes": {"default": [0], "text": "exit codes that count as success"},
    "timeout": {"text": "fail the step after this long", "duration": True},
    "max_retries": {"default": 0, "text": "retry a failing step this many times"},
    "pause_before": {"default": "0s", "text": "wait this long before the step", "duration": True},
}
for _spec in _SHARED.values():
    _spec.setdefault("default", None)


@dataclass
class ShellProvisioner:
    """Run commands or scripts in the guest over SSH."""

    type: Literal["shell"] = opt("shell", "the provisioner type")
    name: str | None = opt(**_SHARED["name"])
    inline: list[str] = opt(**_SHARED["inline"])
    script: str | None = opt(**_SHARED["script"])
    scripts: list[str] = opt(**_SHARED["scripts"])
    environment: dict[str, str] = opt(**_SHARED["environment"])
    sudo: bool = opt(True, "run as root through sudo (the build user has passwordless sudo until "
                           "generalize removes it)")
    execute_command: str | None = opt(
        None, "how the script is run; Packer's {{ path }} (the uploaded script) and {{ vars }} (the "
              "environment assignments)")
    remote_folder: str = opt("/tmp", "where scripts are uploaded in the guest")
    valid_exit_codes: list[int] = opt(**_SHARED["valid_exit_codes"])
    expect_disconnect: bool = opt(False, "a dropped connection (e.g. a reboot) is not a failure")
    timeout: str | None = opt(**_SHARED["timeout"])
    max_retries: int = opt(**_SHARED["max_retries"])
    pause_before: str = opt(**_SHARED["pause_before"])


@dataclass
class FileProvisioner:
    """Copy a file or folder into the guest (or, with direction: download, out of it)."""

    type: Literal["file"] = opt("file", "the provisioner type")
    name: str | None = opt(**_SHARED["name"])
    source: str | None = opt(None, "local file or folder (a trailing / copies the folder's contents)",
                             path=True)
    content: str | None = opt(None, "upload this text instead of a source file")
    destination: str = opt("", "path in the guest (or on the host for a download)")
    direction: Literal["upload", "download"] = opt("upload", "download copies from the guest to the host")
    mode: str | None = opt(None, 'octal mode applied after upload, e.g. "0644"')
    owner: str | None = opt(None, 'owner applied with sudo after upload, e.g. "root:root"')
    max_retries: int = opt(**_SHARED["max_retries"])
    pause_before: str = opt(**_SHARED["pause_before"])


@dataclass
class ShellLocalProvisioner:
    """Run commands or scripts on the host (as a post step: with the artifacts in its environment)."""

    type: Literal["shell-local"] = opt("shell-local", "the step type")
    name: str | None = opt(**_SHARED["name"])
    inline: list[str] = opt(**_SHARED["inline"])
    script: str | None = opt(**_SHARED["script"])
    scripts: list[str] = opt(**_SHARED["scripts"])
    environment: dict[str, str] = opt(**_SHARED["environment"])
    valid_exit_codes: list[int] = opt(**_SHARED["valid_exit_codes"])
    timeout: str | None = opt(**_SHARED["timeout"])
    max_retries: int = opt(**_SHARED["max_retries"])
    pause_before: str = opt(**_SHARED["pause_before"])


Provisioner = ShellProvisioner | FileProvisioner | ShellLocalProvisioner


@dataclass
class ChecksumPost:
    """`post:` step writing extra digest files (SHA512SUMS, MD5SUMS, ...) beside the artifacts.

    SHA256SUMS is always written by the export step; this adds the digests other tools want.
    """

    type: Literal["checksum"] = opt("checksum", "the step type")
    name: str | None = opt(**_SHARED["name"])
    types: list[Literal["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]] = opt(
        ["sha512"], "digests to write, one <TYPE>SUMS file each", aliases=["checksum_types"])


# `post:` steps run after the artifacts are published; shell-local gets the artifact paths in its env
PostStep = ShellLocalProvisioner | ChecksumPost


@dataclass
class ShutdownConfig:
    """How the guest is stopped; either way baker waits for QEMU to exit, then kills it."""

    command: str | None = opt(None, "run in the guest to power off; empty: ACPI power-down over QMP",
                              aliases=["shutdown_command"])
    timeout: str = opt("5m", "how long to wait for the guest to power off", duration=True,
                       aliases=["shutdown_timeout"])


@dataclass
class MinimizeConfig:
    """What generalize removes to make the image smaller: fewer bytes to ship and less to scan.

    docs/man/locales also leave a dpkg path-exclude file, so packages installed later on a clone stay
    lean too (as Ubuntu's minimal images do); `unminimize` is deleting that file and reinstalling."""

    apt: bool = opt(True, "apt-get clean and drop the package lists (a clone runs apt-get update first)")
    docs: bool = opt(False, "remove /usr/share/doc (copyright files stay), info and lintian overrides")
    man: bool = opt(False, "remove man pages")
    locales: list[str] = opt([], "keep only these message catalogs in /usr/share/locale (e.g. [en, de]); "
                                 "empty keeps all")


@dataclass
class GeneralizeConfig:
    """Run inside the guest right before shutdown so clones are distinct and credentials are gone."""

    enabled: bool = opt(True, "run the generalize step at all")
    remove_build_user: bool = opt(True, "delete the build user, its key and its sudo rule")
    cloud_init_clean: bool = opt(True, "cloud-init clean, so clones run cloud-init again")
    machine_id: bool = opt(True, "empty /etc/machine-id, so each clone gets its own")
    ssh_host_keys: bool = opt(True, "remove SSH host keys, so each clone makes its own")
    logs: bool = opt(True, "truncate logs and shell history")
    fstrim: bool = opt(True, "trim free space so the exported image is small")
    minimize: MinimizeConfig = opt(factory=MinimizeConfig, text="remove caches and, opt-in, docs/man/locales")


POLICY_CHECKS = ("password_ssh_login", "empty_passwords", "build_user", "leftover_secrets",
                 "security_updates", "listening_services")


@dataclass
class PolicyConfig:
    """The built-in policy evaluated in the guest before shutdown. A failing check makes the version
    not promotable; the checks in `fail_on` (or "all") fail the build instead."""

    enabled: bool = opt(True, "evaluate the policy")
    fail_on: list[str] = opt([], f"checks that fail the build, or all ({', '.join(POLICY_CHECKS)})")
    ignore: list[str] = opt([], "checks reported but never held against the version")
    security_updates: bool = opt(
        True, "refresh the package lists in the guest to count pending updates from the security archive")
    max_security_updates: int | None = opt(None, "more pending security updates than this fail the check")
    allowed_ports: list[int] | None = opt(None, "listening TCP/UDP ports; others fail listening_services")


@dataclass
class ScanConfig:
    """An external scanner run on the host after export (grype, trivy, ...): argv with $BAKER_SBOM,
    $BAKER_IMAGE and $BAKER_OUTPUT_DIR in its environment; its exit status and output are recorded."""

    command: list[str] = opt([], "the scanner's argv")
    timeout: str = opt("10m", "stop the scanner after this long", duration=True)
    fail_build: bool = opt(False, "a non-zero exit fails the build (else: recorded, not promotable)")


@dataclass
class SignConfig:
    """Sign on build: the provenance (DSSE, ed25519) and SHA256SUMS (OpenSSH signature)."""

    key: str = opt("", "an unencrypted OpenSSH ed25519 private key", path=True)


@dataclass
class ExportSpec:
    """One `exports:` entry; `options` is the exporter's own dataclass (see baker.export)."""

    type: str
    options: Any
    mark: Mark | None = None


@dataclass
class Template:
    """A baker template: one source, built once, provisioned, generalized, exported."""

    name: str = opt(text="names the image and its output files")
    path: Path = opt(text="")  # not a template key (set by the loader)
    description: str = opt("", "free text, recorded in the manifest and the OVF")
    version: str = opt("", "recorded in the manifest and the store (unique per name)")
    include: list[str] = opt(
        [], "YAML fragments merged under this template in order (its own keys win; provisioners and post "
            "steps from fragments come first); paths relative to this file. !include FILE works at any "
            "value position")
    variables: dict[str, Variable] = opt(
        {}, "inputs: name -> declaration (or just a default value), used as {{ var.NAME }}")
    locals: dict[str, Any] = opt(
        {}, "name -> value computed once (strings are expressions over var.*, env.*, helpers and other "
            "locals), used as {{ local.NAME }}")
    source: Source = opt(factory=Source, text="what the VM boots from")
    machine: MachineConfig = opt(factory=MachineConfig, text="the virtual machine")
    communicator: CommunicatorConfig = opt(factory=CommunicatorConfig, text="how baker reaches the guest")
    provisioners: list[Provisioner] = opt([], "steps run in the guest (or on the host) in order",
                                          tagged_by="type")
    shutdown: ShutdownConfig = opt(factory=ShutdownConfig, text="how the guest is stopped")
    generalize: GeneralizeConfig = opt(factory=GeneralizeConfig, text="clean-up in the guest before shutdown")
    exports: list[ExportSpec] = opt([], "output formats, each a type and its options (default: one qcow2)")
    post: list[PostStep] = opt([], "steps run on the host after the artifacts are published",
                               tagged_by="type")
    policy: PolicyConfig = opt(factory=PolicyConfig, text="built-in checks in the guest before shutdown")
    scan: ScanConfig | None = opt(None, "an external vulnerability scanner run after export")
    sign: SignConfig | None = opt(None, "sign the provenance and SHA256SUMS")
    checkpoints: bool = opt(False, "keep the disk after each provisioner in the checkpoint cache; a "
                                   "rebuild whose first provisioners are unchanged resumes after them")
    checkpoint_ttl: str = opt("168h", "checkpoints older than this are not resumed from (apt-get update "
                                    "and the like are not deterministic)", duration=True)
    # resolved variable values (after precedence and type coercion) and which ones are sensitive
    values: dict[str, Any] = field(default_factory=dict)
    sensitive_values: list[str] = field(default_factory=list)
    # locals computed from a sensitive variable (masked like it)
    sensitive_locals: list[str] = field(default_factory=list)
    # every fragment file `include:`/`!include` read, absolute: build inputs (and Make prerequisites)
    included_files: list[Path] = field(default_factory=list)
    # sha256 of the template file's bytes, for the manifest and cache keys
    sha256: str = ""
    # the --var-file files, absolute: build inputs (and Make prerequisites)
    var_files: list[Path] = field(default_factory=list)
    # where each key path came from, for errors raised later (e.g. "provisioners[2].script")
    marks: dict[str, Mark] = field(default_factory=dict)
    # problems that do not stop a build (TemplateError objects, e.g. a source without a checksum);
    # `--strict` makes them errors
    warnings: list[Any] = field(default_factory=list)
    # set by the loader; not a template key, not shown by `inspect`
    render_state: RenderState | None = field(default=None, init=False, repr=False, compare=False)


@dataclass
class RenderState:
    """What late rendering must reuse from load time: the same environment and the same clock."""

    environ: Mapping[str, str] | None
    now: datetime
