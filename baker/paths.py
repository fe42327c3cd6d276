"""Where baker keeps what outlives a build: downloads, kept logs, the KVM probe record, base images.

Read from the environment each time (not at import): tests and operators point BAKER_CACHE_DIR
elsewhere per run.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """${BAKER_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/baker}, as scripts/build-base-image computes it."""
    env = os.environ.get("BAKER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baker"


def base_images_dir() -> Path:
    """Where scripts/build-base-image keeps the project's own base images (`make base-image`)."""
    return cache_root() / "base"
