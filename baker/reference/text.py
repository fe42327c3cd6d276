"""The human reference `baker docs [SECTION]` prints: per key its type, default, allowed values,
aliases and help, from the same walk as the JSON Schema."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import typing
from typing import Any, Literal

from baker.errors import BakerError
from baker.reference.walk import Key, Section, sections
from baker.template.convert import unwrap_optional
from baker.template.yamlnodes import did_you_mean

WIDTH = 100


class UnknownSection(BakerError):
    exit_code = 2


def type_text(key: Key, index: dict[str, Section], path: str) -> str:
    if "type_text" in key.meta:
        return key.meta["type_text"]
    sub = f"{path}.{key.name}" if path else key.name
    if sub in index and index[sub].variants:
        return "list of: " + ", ".join(index[v].tag or v for v in index[sub].variants)
    for unit in ("duration", "size", "path"):
        if key.meta.get(unit):
            return f"{unit}{' or empty' if key.optional else ''}"
    text = _hint_text(key.hint)
    if key.meta.get("argv"):
        text = "list of argv words (or of lists)"
    return f"{text} or empty" if key.optional else text


def _hint_text(tp: Any) -> str:
    tp, _ = unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_hint_text(args[0]) if args else 'values'}"
    if origin is dict:
        args = typing.get_args(tp)
        return f"mapping of {_hint_text(args[1]) if len(args) == 2 else 'values'}"
    if dataclasses.is_dataclass(tp):
        return "mapping (section)"
    return {str: "string", int: "integer", float: "number", bool: "true/false"}.get(tp, "any value")


def _default_text(key: Key) -> str:
    if key.required:
        return "required"
    if "default_text" in key.meta:
        return key.meta["default_text"]
    if dataclasses.is_dataclass(key.default):
        return "its own defaults"
    if key.default is None or key.default in ("", [], {}):
        return "none"
    return json.dumps(key.default) if not isinstance(key.default, str) else key.default


def section_names() -> list[str]:
    return [p for p in sections() if p]


def _summary(doc: str, width: int) -> str:
    first = doc.split(". ")[0].split("; ")[0].rstrip(".")
    return textwrap.shorten(first, width, placeholder=" ...")


def render_index() -> str:
    index = sections()
    width = max(len(p) for p in index) + 2
    lines = ["Template sections (baker docs SECTION shows one):", ""]
    lines += [f"  {p or '(top level)':<{width}}{_summary(s.doc, WIDTH - width - 2)}"
              for p, s in index.items()]
    lines += ["", "The JSON Schema of all of it: docs/template.schema.json (shipped in baker/data)."]
    return "\n".join(lines)


def render_section(name: str) -> str:
    index = sections()
    path = "" if name in ("template", "top", "top-level") else name.strip(".")
    if path not in index:
        tails = [p for p in index if p.rsplit(".", 1)[-1] == path]  # `vmdk` for exports.vmdk
        suggestion = f" (did you mean {' or '.join(repr(t) for t in tails)}?)" if tails \
            else did_you_mean(name, list(index))
        raise UnknownSection(f"unknown section '{name}'{suggestion}", hint="`baker docs` lists the sections")
    section = index[path]
    title = path or "template (top level)"
    lines = [title, "=" * len(title)]
    if section.doc:
        lines += textwrap.wrap(section.doc, WIDTH)
    if section.variants:
        lines += ["", "types (each a mapping with `type:`):"]
        lines += [f"  {index[v].tag:<13} {_summary(index[v].doc, WIDTH - 16)}\n{'':16}baker docs {v}"
                  for v in section.variants]
        return "\n".join(lines)
    for key in section.keys:
        if section.tag is not None and key.name == "type":
            lines += ["", f"type: {section.tag}", "    required: it picks this type"]
            continue
        lines += ["", f"{key.name}: {type_text(key, index, path)}", f"    default: {_default_text(key)}"]
        if key.aliases:
            lines.append(f"    aliases: {', '.join(key.aliases)}")
        if key.help:
            lines += textwrap.wrap(key.help, WIDTH, initial_indent="    ", subsequent_indent="    ")
        sub = key.meta.get("see") or (f"{path}.{key.name}" if path else key.name)
        if sub in index:
            lines.append(f"    see: baker docs {sub}")
    return "\n".join(lines)
