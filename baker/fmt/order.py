"""The canonical key order of every template section, read from the typed model's field order, so
`baker fmt` can never disagree with the model (a new field is placed where it is declared)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from baker.template import model
from baker.template.convert import type_hints, unwrap_optional
from baker.template.loader import USER_KEYS

#: how to order the value of one key: a dataclass, or a rule for the items of a list/mapping
Rule = Callable[[Any], "type | None"]


def field_rank(cls: type) -> dict[str, int]:
    """Key name (aliases included) -> its place in `cls`; `type` always first in a tagged item."""
    out: dict[str, int] = {}
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    if cls is model.Template:
        fields = [f for f in fields if f.name in USER_KEYS]
    if cls is not model.Template:
        out["type"] = -1  # the tag of a provisioner, post step or export
    for i, f in enumerate(fields):
        rank = -1 if f.name == "type" else i
        out[f.name] = rank
        for alias in f.metadata.get("aliases", ()):
            out.setdefault(alias, rank)
    return out


def _tag_classes(union: Any, tag: str = "type") -> dict[str, type]:
    return {typing.get_args(type_hints(c)[tag])[0]: c for c in typing.get_args(union)}


def _exporters() -> dict[str, type]:
    from baker.export import EXPORTERS

    return {name: exp.Options for name, exp in EXPORTERS.items()}


def child_rule(cls: type, key: str) -> tuple[str, Any] | None:
    """What the value of `cls.key` holds: ("class", C), ("items", {type: C}), ("values", C) or None
    (free-form data such as environment or user_data, left in the user's order)."""
    if cls is model.Template and key == "exports":
        return ("items", _exporters())
    if cls is model.Template and key == "variables":
        return ("values", model.Variable)
    f = next((f for f in dataclasses.fields(cls) if key in (f.name, *f.metadata.get("aliases", ()))), None)  # type: ignore[arg-type]
    if f is None:
        return None
    tp, _ = unwrap_optional(type_hints(cls).get(f.name, Any))
    if dataclasses.is_dataclass(tp):
        return ("class", tp)
    if f.metadata.get("tagged_by") and typing.get_origin(tp) is list:
        return ("items", _tag_classes(typing.get_args(tp)[0], f.metadata["tagged_by"]))
    return None
