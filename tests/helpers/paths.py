"""Where the repository is, and the cached base image the e2e tests boot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def base_image_path() -> Path | None:
    env = os.environ.get("BAKER_BASE_IMAGE")
    if env and Path(env).exists():
        return Path(env)
    script = ROOT / "scripts" / "build-base-image"
    if script.exists():
        out = subprocess.run([str(script), "--print-path"], capture_output=True, text=True, check=False)
        p = Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None
        if p and p.exists():
            return p
    return None
