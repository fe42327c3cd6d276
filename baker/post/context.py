"""What a post step knows about the published build, and the environment shell hooks get from it."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PostContext:
    name: str
    version: str
    output_dir: Path
    manifest: Path
    # (export type, published file) in export order; the first file of a type is its main artifact
    artifacts: list[tuple[str, Path]]
    template_dir: Path
    work_dir: Path
    log: logging.Logger
    cancel: threading.Event = field(default_factory=threading.Event)

    def environment(self) -> dict[str, str]:
        """BAKER_* variables for shell-local hooks (a hook's own `environment:` wins)."""
        env = {
            "BAKER_BUILD_NAME": self.name,
            "BAKER_BUILD_VERSION": self.version,
            "BAKER_OUTPUT_DIR": str(self.output_dir),
            "BAKER_MANIFEST": str(self.manifest),
            "BAKER_SHA256SUMS": str(self.output_dir / "SHA256SUMS"),
            # one path per line (paths may hold spaces); `while read -r f` walks them
            "BAKER_ARTIFACTS": "\n".join(str(p) for _, p in self.artifacts),
        }
        for kind, path in self.artifacts:
            env.setdefault(f"BAKER_ARTIFACT_{re.sub(r'[^A-Z0-9]', '_', kind.upper())}", str(path))
        return env
