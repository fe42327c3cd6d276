"""What steps share during one build. Steps read inputs from here and leave their products here."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker.httpserver import GUEST_HOST_IP
from baker.pipeline import StepTiming
from baker.template.model import Template

if TYPE_CHECKING:  # the steps import these lazily; the state only names them
    from baker.aptcache import AptCacheProxy
    from baker.checkpoint.steps import CheckpointRun
    from baker.communicator.ssh import SSHCommunicator
    from baker.export.base import ExportResult
    from baker.httpserver import HTTPServer
    from baker.incremental import Fingerprint
    from baker.keys import BuildKeys
    from baker.layers import Parent
    from baker.machine.accel import AccelChoice
    from baker.machine.qemu import Machine


@dataclass
class BuildOptions:
    output_dir: Path
    on_error: str = "cleanup"  # "cleanup" | "abort"
    keep_workdir: bool = False
    export_jobs: int = 2
    accelerator: str | None = None  # --accel: overrides machine.accelerator (BAKER_ACCEL overrides both)
    timeout: float | None = None  # --timeout, seconds: the build stops and cleans up (exit 124)
    store: Path | None = None  # record the image here after publishing; None: --no-store
    if_changed: bool = False  # --if-changed: skip when the fingerprint matches the last good build
    force: bool = False  # --force: rebuild even when --if-changed finds nothing changed
    wait_lock: bool = False  # --wait-lock: queue behind another build of the same output
    deps_file: Path | None = None  # --deps-file: write the Make rule here after a good build
    apt_cache: bool = False  # --apt-cache: the guest's apt downloads go through a cache on the host
    ignore_checkpoints: bool = False  # --no-checkpoints: never resume (fresh checkpoints are still saved)


@dataclass
class BuildState:
    template: Template
    options: BuildOptions
    cancel: threading.Event
    log: logging.Logger
    log_file: Path | None = None
    work_dir: Path | None = None
    staging_dir: Path | None = None
    base_image: Path | None = None
    base_url: str | None = None
    base_checksum: str | None = None
    base_sha256: str | None = None
    disk: Path | None = None
    keys: BuildKeys | None = None
    instance_id: str | None = None  # the seed's cloud-init instance-id (a resumed build reuses one)
    seed: Path | None = None
    cdroms: list[Path] = field(default_factory=list)
    http: HTTPServer | None = None
    accel: AccelChoice | None = None
    machine: Machine | None = None
    comm: SSHCommunicator | None = None
    apt_cache: AptCacheProxy | None = None
    #: (what, command) run in the guest before generalize and poweroff: undo what a step set up there
    before_shutdown: list[tuple[str, str]] = field(default_factory=list)
    exports: list[ExportResult] = field(default_factory=list)
    manifest_path: Path | None = None
    qemu_version: str = ""
    fingerprint: Fingerprint | None = None  # the inputs as they were when the build began
    parent: Parent | None = None  # a layer's base image (source.image), resolved before the build
    checkpoint: CheckpointRun | None = None  # checkpoints: where the build resumed, what it saved
    timings: list[StepTiming] = field(default_factory=list)  # the pipeline's record, shared not copied
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def build_vars(self) -> dict[str, Any]:
        """The build.* values late template fields can use (boot_command, http_content, ...)."""
        out: dict[str, Any] = {
            "name": self.template.name,
            "http_ip": GUEST_HOST_IP,
            "http_port": self.http.port if self.http is not None else None,
            "ssh_username": self.template.communicator.ssh_username,
        }
        if self.keys is not None:
            out["ssh_public_key"] = self.keys.client_public
            out["ssh_host_key_public"] = self.keys.host_public
        if self.machine is not None:
            out["ssh_host_port"] = self.machine.host_ports.get(self.template.communicator.ssh_port)
        return out
