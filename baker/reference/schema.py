"""JSON Schema (draft 2020-12) of a template, rendered from the key tree in baker.reference.walk.

It accepts what the loader accepts, so editors never flag a valid template: any string value may be
a Jinja expression, so numbers and booleans also take one; a plain string field also takes a YAML
number (kept as written); a list takes a single item; aliases (Packer's spellings) are properties too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from baker.reference.walk import Key, Section, sections
from baker.template import builds
from baker.template.convert import unwrap_optional

DIALECT = "https://json-schema.org/draft/2020-12/schema"
EXPRESSION = {"$ref": "#/$defs/expression"}
_INT_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_NUMBER_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


def def_name(path: str, index: dict[str, Section] | None = None) -> str:
    """The $defs name of a section: its path, or the first path of the same class (post.shell-local
    is provisioners.shell-local)."""
    if index is not None and path in index:
        cls = index[path].cls
        path = next((p for p, s in index.items() if s.cls is cls and not s.variants), path)
    return path or "template"


def type_schema(tp: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema of one annotation as the loader reads it (see the module docstring)."""
    meta = meta or {}
    tp, optional = unwrap_optional(tp)
    out = _plain(tp, meta)
    if optional:
        out = {"anyOf": [*out.get("anyOf", [out]), {"type": "null"}]} if "anyOf" in out or "type" not in out \
            else {**out, "type": [*_types(out["type"]), "null"]}
    return out


def _types(t: str | list[str]) -> list[str]:
    return list(t) if isinstance(t, list) else [t]


def _plain(tp: Any, meta: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return {}
    if origin is Literal:
        return {"anyOf": [{"enum": list(typing.get_args(tp))}, EXPRESSION]}
    if tp is bool:
        return {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "yes", "no", "on", "off"]},
                          EXPRESSION]}
    if tp is int:
        return {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": _INT_TEXT}, EXPRESSION]}
    if tp is float:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _NUMBER_TEXT}, EXPRESSION]}
    if tp is str or tp is dataclasses.MISSING:
        return {"type": ["string", "number"]}
    if origin in (list, tuple):
        item = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        item_schema = type_schema(item)
        if meta.get("argv"):
            words = {"type": "array", "items": item_schema}  # Packer's list of lists
            return {"type": "array", "items": {"anyOf": [item_schema, words]}}
        return {"anyOf": [{"type": "array", "items": item_schema}, item_schema, EXPRESSION]}
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        value = type_schema(args[1]) if len(args) == 2 else {}
        mapping = {"type": "object", "additionalProperties": value}
        if meta.get("late") or args[1:] != (str,):
            return mapping
        return {"anyOf": [mapping, {"type": "array", "items": {"type": "string", "pattern": "="}}]}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(a) for a in typing.get_args(tp)]}
    return {}


def key_schema(key: Key, path: str, index: dict[str, Section]) -> dict[str, Any]:
    sub = f"{path}.{key.name}" if path else key.name
    if sub in index and index[sub].variants:  # a list of tagged types
        items = {"oneOf": [{"$ref": f"#/$defs/{def_name(v, index)}"} for v in index[sub].variants]}
        out: dict[str, Any] = {"type": "array", "items": items}
        if sub == "exports":
            out = {"anyOf": [{**out, "minItems": 1}, {"type": "null"}]}
    elif sub in index and dataclasses.is_dataclass(key.hint):
        ref = {"$ref": f"#/$defs/{def_name(sub, index)}"}
        out = {"anyOf": [ref, {"type": "null"}]} if key.optional or not key.required else ref
    elif sub == "variables":
        out = {"type": "object", "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
               "additionalProperties": {"anyOf": [{"$ref": "#/$defs/variables"},
                                                  {"not": {"type": "object"}}]}}
    elif key.meta.get("tag_const") is not None:
        out = {"const": key.meta["tag_const"]}
    else:
        out = type_schema(key.hint | None if key.optional else key.hint, key.meta)  # type: ignore[operator]
    if key.help:
        out = {"description": _description(key), **out}
    if key.default is not dataclasses.MISSING and _json_safe(key.default) and key.default is not None:
        out["default"] = key.default
    return out


def _description(key: Key) -> str:
    text = key.help
    for unit, examples in (("duration", "90s, 10m, 1h30m"), ("size", "8G, 512M, 20GiB or a byte count")):
        if key.meta.get(unit):
            text += f" ({unit}: {examples})"
    if key.meta.get("path"):
        text += " (relative to the template's folder)"
    return text


def _json_safe(value: Any) -> bool:
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


def section_schema(section: Section, index: dict[str, Section]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key in section.keys:
        if section.tag is not None and key.name == "type":
            key = dataclasses.replace(key, meta={**key.meta, "tag_const": section.tag},
                                      default=dataclasses.MISSING)
        schema = key_schema(key, section.path, index)
        props[key.name] = schema
        for alias in key.aliases:
            props[alias] = {**schema, "description": f"alias of {key.name}: {schema.get('description', '')}"}
    required = [k.name for k in section.keys if k.required or (section.tag is not None and k.name == "type")]
    out: dict[str, Any] = {"type": "object"}
    if section.doc:
        out["description"] = section.doc
    out["properties"] = props
    if required:
        out["required"] = required
    if section.path == "":
        out["patternProperties"] = {"^x-": {}}
    out["additionalProperties"] = False
    return out


def builds_schema(key: Key, section: Section) -> dict[str, Any]:
    """`builds:` entries override whole or partial top-level sections, so only their shape is checked;
    the descriptions are the ones `baker docs builds` prints."""
    props: dict[str, Any] = {k.name: {"description": k.help} for k in section.keys}
    props["name"] |= {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}
    item = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": props}
    return {"description": key.help, "type": "array", "minItems": 1, "items": item}


def template_schema() -> dict[str, Any]:
    index = sections()
    expression = {"type": "string", "pattern": r"\{\{|\{%",
                  "description": "a Jinja expression, rendered when the template loads"}
    defs: dict[str, Any] = {"expression": expression}
    for path, section in index.items():
        if path and path != builds.KEY and not section.variants and def_name(path, index) == path:
            defs[path] = section_schema(section, index)
    top = section_schema(index[""], index)
    top["properties"][builds.KEY] = builds_schema(next(k for k in index[""].keys if k.name == builds.KEY),
                                                  index[builds.KEY])
    return {"$schema": DIALECT, "title": "baker template", **top, "$defs": defs}
