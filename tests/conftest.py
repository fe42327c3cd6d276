"""Shared fixtures: the cached base image, and booting a built image to look inside it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


# resolved at import, before any fixture points BAKER_CACHE_DIR at a per-session temp dir
_BASE_IMAGE = base_image_path()


@pytest.fixture(scope="session")
def base_image() -> Path:
    p = _BASE_IMAGE
    if p is None:
        pytest.skip("base image not built: run `make base-image` (or set BAKER_BASE_IMAGE)")
    return p


@pytest.fixture(scope="session", autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`baker build` records into a store by default: in tests never the user's own. Session scope, so
    it is in place before any session-scoped build fixture runs."""
    old = os.environ.get("BAKER_STORE")
    os.environ["BAKER_STORE"] = str(tmp_path_factory.getbasetemp() / "baker-store")
    yield
    if old is None:
        os.environ.pop("BAKER_STORE", None)
    else:
        os.environ["BAKER_STORE"] = old


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's download cache or logs, but share one cache per session."""
    if "BAKER_TEST_REAL_CACHE" not in os.environ:
        root = tmp_path_factory.getbasetemp() / "baker-cache"
        monkeypatch.setenv("BAKER_CACHE_DIR", str(root))

