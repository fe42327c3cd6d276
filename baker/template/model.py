"""The typed template model: what a YAML template means once loaded, rendered and validated.

Field names keep Packer's words where Packer users have muscle memory (iso_url, boot_command,
ssh_timeout, shutdown_command, valid_exit_codes, ...). Field metadata conventions used by the loader:
  - metadata={"late": True}: rendered at build time (needs build.* values such as build.http_port)
  - metadata={"duration": True} / {"size": True}: string parsed with baker.units, kept as given
  - metadata={"path": True}: relative paths resolve against the template's folder
  - metadata={"aliases": [...]}: other accepted key names (Packer's spelling)
  - metadata={"argv": True}: a flat list of words, or Packer's list of lists (flattened)
  - metadata={"tagged_by": "type"}: a union of dataclasses; that key's Literal value picks the class
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from baker.errors import Mark


@dataclass
class Variable:
    """A template input. Precedence (low→high): default, BAKER_VAR_<name>, --var-file, -var."""

    default: Any = None
    type: Literal["string", "int", "float", "bool", "list", "map"] = "string"
    required: bool = False
    sensitive: bool = False
    description: str = ""


@dataclass
class CloudImageSource:
    """A bootable disk image (qcow2/raw) used as the base, like Packer's disk_image=true."""

    url: str
    checksum: str = field(default="none", metadata={"aliases": ["iso_checksum"]})
    format: Literal["auto", "qcow2", "raw"] = "auto"
    # overlay: a qcow2 backed by the cached base (fast, small); copy: a standalone full copy
    disk_mode: Literal["overlay", "copy"] = "overlay"


@dataclass
class IsoSource:
    """An installer ISO; the target disk starts empty and boots CD-first."""

    iso_url: str | None = field(default=None, metadata={"aliases": ["url"]})
    iso_urls: list[str] = field(default_factory=list, metadata={"aliases": ["urls"]})
    iso_checksum: str = field(default="none", metadata={"aliases": ["checksum"]})


@dataclass
class CloudInitConfig:
    """User-supplied cloud-init data, merged into the seed baker writes for its build user."""

    enabled: bool = True
    user_data: dict[str, Any] = field(default_factory=dict)
    meta_data: dict[str, Any] = field(default_factory=dict)
    network_config: dict[str, Any] | None = None


@dataclass
class Source:
    cloud_image: CloudImageSource | None = None
    iso: IsoSource | None = None
    cloud_init: CloudInitConfig = field(default_factory=CloudInitConfig)
    # boot: typed through QMP; Packer syntax plus <waitFor "text">
    boot_command: list[str] = field(default_factory=list, metadata={"late": True})
    boot_wait: str = field(default="0s", metadata={"duration": True})
    # QEMU's PS/2 buffer is tiny and nothing acknowledges keys: 10ms dropped keys on a loaded host
    boot_key_interval: str = field(default="50ms", metadata={"duration": True})
    # HTTP server on 127.0.0.1 (guest sees it as 10.0.2.2 via user networking)
    http_directory: str | None = field(default=None, metadata={"path": True})
    http_content: dict[str, str] = field(default_factory=dict, metadata={"late": True})
    # an extra CD-ROM (kickstart, autoinstall, autounattend, any files)
    cd_files: list[str] = field(default_factory=list, metadata={"path": True})
    cd_content: dict[str, str] = field(default_factory=dict, metadata={"late": True})
    cd_label: str = "baker"
    # direct kernel boot
    kernel: str | None = field(default=None, metadata={"path": True})
    initrd: str | None = field(default=None, metadata={"path": True})
    append: str | None = field(default=None, metadata={"late": True})


@dataclass
class MachineConfig:
    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    cpus: int = 2
    memory: int = 2048  # MiB, as Packer
    disk_size: str = field(default="8G", metadata={"size": True})
    disk_interface: Literal["virtio", "virtio-scsi", "ide", "sata"] = "virtio"
    disk_cache: Literal["writeback", "writethrough", "none", "unsafe", "directsync"] = "unsafe"
    disk_discard: Literal["unmap", "ignore"] = "unmap"
    machine_type: str = "q35"
    cpu_model: str | None = None
    firmware: Literal["bios", "uefi"] = "bios"
    secure_boot: bool = False
    net_device: str = "virtio-net-pci"
    qemu_binary: str = "qemu-system-x86_64"
    # appended to baker's own arguments, never replacing them; each item is one argv word
    qemuargs: list[str] = field(default_factory=list, metadata={"argv": True})
    # save a PNG of the screen every N seconds while waiting for SSH (0 = only on failure)
    screendump_interval: str = field(default="0s", metadata={"duration": True})


@dataclass
class CommunicatorConfig:
    type: Literal["ssh", "none"] = "ssh"
    ssh_username: str = "baker"
    ssh_password: str | None = None
    ssh_private_key_file: str | None = field(default=None, metadata={"path": True})
    ssh_port: int = 22
    ssh_timeout: str = field(default="10m", metadata={"duration": True})
    ssh_handshake_attempts: int = 100
    # strict: the guest must present the host key baker injected (cloud-init) or the template pins
    host_key_check: Literal["strict", "off"] = "strict"
    pause_before_connecting: str = field(default="0s", metadata={"duration": True})


@dataclass
class ShellProvisioner:
    type: Literal["shell"] = "shell"
    name: str | None = None
    inline: list[str] = field(default_factory=list)
    script: str | None = field(default=None, metadata={"path": True})
    scripts: list[str] = field(default_factory=list, metadata={"path": True})
    environment: dict[str, str] = field(default_factory=dict, metadata={"aliases": ["environment_vars"]})
    # run as root through sudo (the build user has passwordless sudo until generalize removes it)
    sudo: bool = True
    # Packer's placeholders: {{ path }} the uploaded script, {{ vars }} the environment assignments
    execute_command: str | None = None
    remote_folder: str = "/tmp"
    valid_exit_codes: list[int] = field(default_factory=lambda: [0])
    expect_disconnect: bool = False
    timeout: str | None = field(default=None, metadata={"duration": True})
    max_retries: int = 0
    pause_before: str = field(default="0s", metadata={"duration": True})


@dataclass
class FileProvisioner:
    type: Literal["file"] = "file"
    name: str | None = None
    source: str | None = field(default=None, metadata={"path": True})
    content: str | None = None
    destination: str = ""
    direction: Literal["upload", "download"] = "upload"
    mode: str | None = None  # octal, e.g. "0644"; applied after upload
    owner: str | None = None  # e.g. "root:root"; applied with sudo after upload
    max_retries: int = 0
    pause_before: str = field(default="0s", metadata={"duration": True})


@dataclass
class ShellLocalProvisioner:
    type: Literal["shell-local"] = "shell-local"
    name: str | None = None
    inline: list[str] = field(default_factory=list)
    script: str | None = field(default=None, metadata={"path": True})
    scripts: list[str] = field(default_factory=list, metadata={"path": True})
    environment: dict[str, str] = field(default_factory=dict, metadata={"aliases": ["environment_vars"]})
    valid_exit_codes: list[int] = field(default_factory=lambda: [0])
    timeout: str | None = field(default=None, metadata={"duration": True})
    max_retries: int = 0
    pause_before: str = field(default="0s", metadata={"duration": True})


Provisioner = ShellProvisioner | FileProvisioner | ShellLocalProvisioner


@dataclass
class ChecksumPost:
    """`post:` step writing extra digest files (SHA512SUMS, MD5SUMS, ...) beside the artifacts.

    SHA256SUMS is always written by the export step; this adds the digests other tools want.
    """

    type: Literal["checksum"] = "checksum"
    name: str | None = None
    types: list[Literal["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]] = field(
        default_factory=lambda: ["sha512"], metadata={"aliases": ["checksum_types"]})


# `post:` steps run after the artifacts are published; shell-local gets the artifact paths in its env
PostStep = ShellLocalProvisioner | ChecksumPost


@dataclass
class ShutdownConfig:
    # empty: ACPI power-down over QMP. Either way baker waits for QEMU to exit, then kills it.
    command: str | None = field(default=None, metadata={"aliases": ["shutdown_command"]})
    timeout: str = field(default="5m", metadata={"duration": True, "aliases": ["shutdown_timeout"]})


@dataclass
class GeneralizeConfig:
    """Run inside the guest right before shutdown so clones are distinct and credentials are gone."""

    enabled: bool = True
    remove_build_user: bool = True
    cloud_init_clean: bool = True
    machine_id: bool = True
    ssh_host_keys: bool = True
    logs: bool = True
    fstrim: bool = True


POLICY_CHECKS = ("password_ssh_login", "empty_passwords", "build_user", "leftover_secrets",
                 "security_updates", "listening_services")


@dataclass
class PolicyConfig:
    """The built-in policy evaluated in the guest before shutdown. A failing check makes the version
    not promotable; the checks in `fail_on` (or "all") fail the build instead."""

    enabled: bool = True
    fail_on: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)  # checks reported but never held against the version
    # refresh the package lists in the guest to count pending updates from the security archive
    security_updates: bool = True
    max_security_updates: int | None = None  # more pending security updates than this fail the check
    allowed_ports: list[int] | None = None  # listening TCP/UDP ports; others fail listening_services


@dataclass
class ScanConfig:
    """An external scanner run on the host after export (grype, trivy, ...): argv with $BAKER_SBOM,
    $BAKER_IMAGE and $BAKER_OUTPUT_DIR in its environment; its exit status and output are recorded."""

    command: list[str] = field(default_factory=list)
    timeout: str = field(default="10m", metadata={"duration": True})
    fail_build: bool = False  # a non-zero exit fails the build (else: recorded, not promotable)


@dataclass
class SignConfig:
    """Sign on build: the provenance (DSSE, ed25519) and SHA256SUMS (OpenSSH signature)."""

    key: str = field(default="", metadata={"path": True})  # an unencrypted OpenSSH ed25519 private key


@dataclass
class ExportSpec:
    """One `exports:` entry; `options` is the exporter's own dataclass (see baker.export)."""

    type: str
    options: Any
    mark: Mark | None = None


@dataclass
class Template:
    name: str
    path: Path
    description: str = ""
    version: str = ""
    variables: dict[str, Variable] = field(default_factory=dict)
    source: Source = field(default_factory=Source)
    machine: MachineConfig = field(default_factory=MachineConfig)
    communicator: CommunicatorConfig = field(default_factory=CommunicatorConfig)
    provisioners: list[Provisioner] = field(default_factory=list, metadata={"tagged_by": "type"})
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    generalize: GeneralizeConfig = field(default_factory=GeneralizeConfig)
    exports: list[ExportSpec] = field(default_factory=list)
    post: list[PostStep] = field(default_factory=list, metadata={"tagged_by": "type"})
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    scan: ScanConfig | None = None
    sign: SignConfig | None = None
    # resolved variable values (after precedence and type coercion) and which ones are sensitive
    values: dict[str, Any] = field(default_factory=dict)
    sensitive_values: list[str] = field(default_factory=list)
    # sha256 of the template file's bytes, for the manifest and cache keys
    sha256: str = ""
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
