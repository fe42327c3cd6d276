"""Where baker keeps what outlives a build: one root for downloads, kept logs and the KVM probe cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """${BAKER_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/baker}, as scripts/build-base-image computes it."""
    base = os.environ.get("BAKER_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "baker")
    return Path(base).expanduser()
