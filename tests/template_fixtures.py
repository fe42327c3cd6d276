"""A minimal stand-in exporter registry for template tests that only need a `qcow2` export type.

Keeps loader tests independent of the real exporters' option sets.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest


@dataclass
class Qcow2Options:
    compress: bool = False


@pytest.fixture(autouse=True)
def fake_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("baker.export")
    mod.EXPORTERS = {"qcow2": type("Qcow2", (), {"Options": Qcow2Options})}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "baker.export", mod)
