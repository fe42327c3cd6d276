"""What steps share during one build. Steps read inputs from here and leave their products here."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baker.template.model import Template


@dataclass
class BuildOptions:
    output_dir: Path
    on_error: str = "cleanup"  # "cleanup" | "abort"
    keep_workdir: bool = False
    export_jobs: int = 2
    timeout: float | None = None
    store: Path | None = None  # record the image here after publishing; None: --no-store


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
    keys: Any = None
    seed: Path | None = None
    cdroms: list[Path] = field(default_factory=list)
    http: Any = None
    accel: Any = None
    machine: Any = None
    comm: Any = None
    exports: list[Any] = field(default_factory=list)
    manifest_path: Path | None = None
    qemu_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def build_vars(self) -> dict[str, Any]:
        """The build.* values late template fields can use (boot_command, http_content, ...)."""
        out: dict[str, Any] = {
            "name": self.template.name,
            "http_ip": "10.0.2.2",
            "http_port": getattr(self.http, "port", None),
            "ssh_username": self.template.communicator.ssh_username,
        }
        if self.keys is not None:
            out["ssh_public_key"] = self.keys.client_public
            out["ssh_host_key_public"] = self.keys.host_public
        if self.machine is not None:
            out["ssh_host_port"] = self.machine.host_ports.get(self.template.communicator.ssh_port)
        return out
