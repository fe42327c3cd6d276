"""Shared fixtures: the cached base image, an isolated cache, a stand-in exporter registry.

Helpers that are not fixtures live in tests/helpers/ (`from tests.helpers.<module> import ...`).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import base_image_path

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


@dataclass
class _Qcow2Options:
    compress: bool = False


@pytest.fixture
def fake_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A minimal exporter registry with only `qcow2`: loader tests stay independent of the real
    exporters' option sets (use with `pytestmark = pytest.mark.usefixtures("fake_exporters")`)."""
    mod = types.ModuleType("baker.export")
    mod.EXPORTERS = {"qcow2": type("Qcow2", (), {"Options": _Qcow2Options})}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "baker.export", mod)
