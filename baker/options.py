"""Dataclass fields that carry their own help text: one convention for the template model and the
exporters' options, read by the loader (aliases, units) and by baker.reference (schema, `baker docs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def help_field(default: Any = dataclasses.MISSING, text: str = "", *,
               factory: Callable[[], Any] | None = None, **metadata: Any) -> Any:
    """A field with `help` metadata (plus any other metadata key); a list/dict default is copied per
    instance, `factory` builds other mutable defaults, no default at all makes the key required."""
    meta = {"help": text, **metadata}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
