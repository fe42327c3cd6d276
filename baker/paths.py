"""Where baker keeps things between builds: one answer, read from the environment each time.

Read each time (not at import) because tests and operators point BAKER_CACHE_DIR elsewhere per run.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """${BAKER_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/baker}."""
    env = os.environ.get("BAKER_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "baker"


def base_images_dir() -> Path:
    """Where scripts/build-base-image keeps the project's own base images (`make base-image`)."""
    return cache_root() / "base"
