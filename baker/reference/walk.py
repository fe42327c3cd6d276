"""The template's key tree, read from the model's type hints and field metadata (and each exporter's
Options): one walk that both the JSON Schema and `baker docs` render, so neither can drift from code."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from baker.export import EXPORTERS
from baker.template import builds, model
from baker.template.convert import type_hints, unwrap_optional
from baker.template.loader import USER_KEYS

# (union field of Template, section names of its types)
TAGGED = ("provisioners", "post")


@dataclass
class Key:
    name: str
    hint: Any  # the annotation, Optional unwrapped
    optional: bool  # None is a value
    required: bool
    default: Any  # dataclasses.MISSING when required
    help: str
    aliases: list[str]
    meta: dict[str, Any]


@dataclass
class Section:
    """One mapping of keys: `machine`, `provisioners.shell`, `exports.vmdk`, ..."""

    path: str
    cls: type
    doc: str
    keys: list[Key]
    variants: list[str] = field(default_factory=list)  # for a list of tagged types: their sections
    tag: str | None = None  # the `type` value that picks this section in its list


def doc_of(obj: Any) -> str:
    """A class's own docstring (not the signature dataclass() makes up), first paragraph, one line."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or (isinstance(obj, type) and doc.startswith(f"{obj.__name__}(")):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def keys_of(cls: type, only: frozenset[str] | None = None) -> list[Key]:
    hints = type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or (only is not None and f.name not in only):
            continue
        hint, optional = unwrap_optional(hints.get(f.name, Any))
        default = default_of(f)
        out.append(Key(f.name, hint, optional, default is dataclasses.MISSING, default,
                       f.metadata.get("help", ""), list(f.metadata.get("aliases", ())), dict(f.metadata)))
    return out


def tag_of(cls: type, tag: str = "type") -> str:
    return typing.get_args(type_hints(cls)[tag])[0]


def exporter_doc(exporter: type) -> str:
    return doc_of(exporter) or doc_of(inspect.getmodule(exporter)).split(". ")[0].rstrip(".") + "."


def sections() -> dict[str, Section]:
    """Every section by its path, top level first ("" is the template itself)."""
    out: dict[str, Section] = {}

    def add(path: str, cls: type, keys: list[Key]) -> None:
        out[path] = Section(path, cls, doc_of(cls), keys)
        for key in keys:
            sub = join(path, key.name)
            if dataclasses.is_dataclass(key.hint):
                add(sub, key.hint, keys_of(key.hint))  # type: ignore[arg-type]
            elif key.meta.get("tagged_by"):
                classes = typing.get_args(typing.get_args(key.hint)[0])
                out[sub] = Section(sub, list, key.help, [])
                for c in classes:
                    name = join(sub, tag_of(c))
                    out[sub].variants.append(name)
                    add(name, c, keys_of(c))
                    out[name].tag = tag_of(c)

    add("", model.Template, keys_of(model.Template, USER_KEYS))
    out["variables"] = Section("variables", model.Variable,
                               "name: declaration (or name: default value); used as {{ var.NAME }}. "
                               + doc_of(model.Variable), keys_of(model.Variable))
    key, section = builds_section(out[""])
    out[""].keys.append(key)
    out[builds.KEY] = section
    exports = Section("exports", list, next(k.help for k in out[""].keys if k.name == "exports"), [])
    out["exports"] = exports
    for type_name, exporter in sorted(EXPORTERS.items()):
        name = f"exports.{type_name}"
        exports.variants.append(name)
        type_key = Key("type", Literal[type_name], False, True, dataclasses.MISSING, "the export type",
                       [], {})
        out[name] = Section(name, exporter.Options, exporter_doc(exporter),
                            [type_key, *keys_of(exporter.Options)], tag=type_name)
    order = [k.name for k in out[""].keys]
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0].split(".")[0]) + 1
                                                    if kv[0] else 0, kv[0])))


BUILDS_DOC = ("Several named builds of one template, sharing its variables and provisioners (Packer's "
              "sources); each entry is a name and the top-level sections it overrides. A build is "
              "<template name>-<build name> everywhere: its output images/<that>/, lock, Make rule, store "
              "name and --if-changed record. `--only`/`--except` pick builds; `baker build -j N` runs them "
              "side by side; `baker deps --makefile` gives Make one target per build.")


def builds_section(top: Section) -> tuple[Key, Section]:
    """`builds:` is read from YAML nodes (baker.template.builds), not from a dataclass: its key in the
    top level and its own section, with the help text the JSON Schema also uses."""
    hints = {k.name: k.hint for k in top.keys}
    name = Key("name", str, False, True, dataclasses.MISSING,
               "the build's name (letters, digits, '.', '_', '-'): it builds as <template name>-<this>",
               [], {})
    overrides = [Key(k, hints.get(k, Any), True, False, None,
                     f"this build's {k} (mappings merge key by key, lists and scalars replace, null removes "
                     "a key)", [], {"default_text": "the template's", "type_text": f"as the top-level {k}",
                                    "see": k})
                 for k in builds.OVERRIDABLE]
    key = Key(builds.KEY, list[builds.BuildDecl], False, False, [],
              "several named builds sharing the provisioners (Packer's sources); each builds as "
              "<name>-<build name> into images/<name>-<build name>", [], {})
    return key, Section(builds.KEY, builds.BuildDecl, BUILDS_DOC, [name, *overrides])


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
