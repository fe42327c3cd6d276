"""YAML nodes → the typed model, driven by the dataclasses' type hints and field metadata.

One generic walk instead of hand-written parsing per section, so a new model field is usable (and
validated, with did-you-mean on typos) the moment it is declared. Errors are collected, not raised,
so a user sees every problem of a template at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import Mark
from baker.template.render import Renderer, RenderError, packer_compat, text_of
from baker.template.yamlnodes import (
    NULL_TAG,
    STR_TAG,
    BadScalar,
    Problems,
    did_you_mean,
    join,
    kind,
    mark_of,
    pairs,
    scalar_value,
)
from baker.units import parse_duration, parse_size


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BAD = _Sentinel("BAD")  # conversion failed; the error is already recorded
NULL = _Sentinel("NULL")  # an explicit empty value: use the field's default
_MAX_DEPTH = 64
_QUOTE_HINT = 'a value that starts with {{ must be quoted: "{{ ... }}"'
# field metadata key -> the baker.units parser that checks it, and examples for the error hint
_UNITS = (("duration", parse_duration, "examples: 90s, 10m, 1h30m, 500ms"),
          ("size", parse_size, "examples: 8G, 512M, 20GiB, or a byte count"))
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}
_HINT_CACHE: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        try:
            _HINT_CACHE[cls] = typing.get_type_hints(cls)
        except Exception:  # an exporter's Options with hints we cannot resolve: accept any value
            _HINT_CACHE[cls] = {f.name: Any for f in dataclasses.fields(cls)}
    return _HINT_CACHE[cls]


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) != len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        if optional:
            return typing.Union[tuple(args)], True  # noqa: UP007 - built at runtime
    return tp, False


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _describe(tp: Any) -> str:
    if tp is str or typing.get_origin(tp) is Literal:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    if typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return "a value"


def _default_exists(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def parse_number(value: Any, tp: type) -> int | float:
    """An int or float from YAML or from text (`-var n=8`); booleans are not numbers. ValueError if not."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip(), 10)
    elif isinstance(value, int | float):
        return float(value)
    elif isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"not a number: {type(value).__name__}")


class Converter:
    """Converts nodes of one file; records every key path's mark; renders strings when it has a renderer."""

    def __init__(self, problems: Problems, file: str, marks: dict[str, Mark],
                 renderer: Renderer | None = None) -> None:
        self.problems = problems
        self.file = file
        self.marks = marks
        self.renderer = renderer
        self._any_memo: dict[int, Any] = {}

    # -- helpers ----------------------------------------------------------------------------------
    def mark(self, node: Node) -> Mark:
        return mark_of(node, self.file)

    def error(self, message: str, node: Node | Mark | None, path: str, hint: str | None = None) -> _Sentinel:
        mark = self.mark(node) if isinstance(node, Node) else node
        self.problems.add(message, mark, path, hint)
        return BAD

    def entries(self, node: MappingNode, path: str) -> list[tuple[str, ScalarNode, Node]]:
        return pairs(node, self.problems, self.file, path)

    def _render(self, text: str, node: Node, path: str, *, native_result: bool = True) -> Any:
        if self.renderer is None:
            return text
        try:
            return self.renderer.render(text, native_result=native_result)
        except RenderError as e:
            return BAD if e.quiet else self.error(e.message, node, path, e.hint)

    def _wrong_kind(self, node: Node, tp: Any, path: str, hint: str | None = None) -> _Sentinel:
        if isinstance(node, MappingNode) and node.flow_style and node.value \
                and isinstance(node.value[0][0], MappingNode):
            hint = _QUOTE_HINT
        return self.error(f"expected {_describe(tp)}, got {kind(node)}", node, path, hint)

    # -- nodes --------------------------------------------------------------------------------------
    def convert(self, node: Node, tp: Any, path: str, meta: Mapping[str, Any] | None = None) -> Any:
        """A node as a value of type `tp`; NULL for an explicit empty value, BAD after an error."""
        meta = meta or {}
        tp, optional = unwrap_optional(tp)
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            return None if optional or tp is Any else NULL
        if meta.get("late"):
            return self._late(node, tp, path)
        if tp is Any or tp is object:
            return self.any_value(node, path)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(node, tp, path)  # type: ignore[arg-type]
        if meta.get("tagged_by") and _is_union(tp):  # a union of dataclasses, picked by that key
            return self._tagged_union(node, typing.get_args(tp), path, meta["tagged_by"])
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            item_tp = typing.get_args(tp)[0] if typing.get_args(tp) else Any
            out = self._list(node, item_tp, path, meta)
            return tuple(out) if origin is tuple and isinstance(out, list) else out
        if origin is dict or tp is dict:
            args = typing.get_args(tp)
            return self._dict(node, args[1] if len(args) == 2 else Any, path)
        if not isinstance(node, ScalarNode):
            return self._wrong_kind(node, tp, path)
        stringy = tp in (str, Path) or typing.get_origin(tp) is Literal
        try:
            value = scalar_value(node, raw=stringy)
        except BadScalar as e:
            return self.error(str(e), node, path)
        if node.tag == STR_TAG:
            value = self._render(value, node, path)
            if value is BAD:
                return BAD
        return self.coerce(value, tp, path, self.mark(node), meta)

    def _late(self, node: Node, tp: Any, path: str) -> Any:
        """Late fields stay raw text (rendered at build time) but get their syntax checked now."""
        origin = typing.get_origin(tp)
        if origin is list:
            if not isinstance(node, SequenceNode):
                node_list = [node] if isinstance(node, ScalarNode) else None
                if node_list is None:
                    return self._wrong_kind(node, tp, path)
            else:
                node_list = node.value
            out = []
            for i, item in enumerate(node_list):
                ipath = f"{path}[{i}]"
                self.marks[ipath] = self.mark(item)
                out.append(self._late(item, str, ipath))
            return BAD if BAD in out else out
        if origin is dict:
            if not isinstance(node, MappingNode):
                return self._wrong_kind(node, tp, path)
            result: dict[str, str] = {}
            bad = False
            for key, knode, vnode in self.entries(node, path):
                kpath = join(path, key)
                self.marks[kpath] = self.mark(vnode if isinstance(vnode, ScalarNode) else knode)
                value = self._late(vnode, str, kpath)
                bad |= value is BAD
                result[key] = value
            return BAD if bad else result
        if not isinstance(node, ScalarNode):
            return self._wrong_kind(node, tp, path)
        if node.tag == NULL_TAG:
            return ""
        text = packer_compat(node.value)
        if self.renderer is not None:
            try:
                self.renderer.check_late(text)
            except RenderError as e:
                return BAD if e.quiet else self.error(e.message, node, path, e.hint)
        return text

    def _list(self, node: Node, item_tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if isinstance(node, MappingNode):
            return self._wrong_kind(node, list, path)
        if isinstance(node, ScalarNode):  # a single value, or an expression that renders to a list
            value = self.convert(node, Any, path)
            if value is BAD:
                return BAD
            return self.coerce(value if isinstance(value, list) else [value], list[item_tp], path,
                               self.mark(node), meta)
        out: list[Any] = []
        bad = False
        for i, item in enumerate(node.value):
            ipath = f"{path}[{i}]"
            self.marks[ipath] = self.mark(item)
            value = self.convert(item, item_tp, ipath, meta)
            if value is NULL:
                value = self.error(f"empty list item where {_describe(item_tp)} is expected", item, ipath)
            bad |= value is BAD
            out.append(value)
        return BAD if bad else out

    def _dict(self, node: Node, value_tp: Any, path: str) -> Any:
        if isinstance(node, SequenceNode):  # Packer's environment_vars: ["K=V", ...]
            items = self.convert(node, list[str], path)
            if items is BAD:
                return BAD
            return self.coerce(items, dict[str, value_tp], path, self.mark(node), {})
        if isinstance(node, ScalarNode):
            value = self.convert(node, Any, path)
            if value is BAD:
                return BAD
            return self.coerce(value, dict[str, value_tp], path, self.mark(node), {})
        out: dict[str, Any] = {}
        bad = False
        for key, knode, vnode in self.entries(node, path):  # type: ignore[arg-type]
            kpath = join(path, key)
            self.marks[kpath] = self.mark(vnode if isinstance(vnode, ScalarNode) else knode)
            key_text = self._render(key, knode, kpath, native_result=False)
            value = self.convert(vnode, value_tp, kpath)
            if value is NULL:
                value = None if value_tp is Any else "" if value_tp is str else \
                    self.error(f"'{key}' needs a value", vnode, kpath)
            bad |= value is BAD or key_text is BAD
            if key_text is not BAD:
                out[key_text] = value
        return BAD if bad else out

    def any_value(self, node: Node, path: str, depth: int = 0) -> Any:
        """Free-form data (cloud-init user_data, variable defaults): plain values, strings rendered."""
        memo = self._any_memo.get(id(node))
        if memo is not None and memo[0] is node:
            return memo[1]
        if depth > _MAX_DEPTH:
            return self.error("nested too deeply (or a recursive alias)", node, path)
        if isinstance(node, ScalarNode):
            try:
                value = scalar_value(node)
            except BadScalar as e:
                return self.error(str(e), node, path)
            if node.tag == STR_TAG:
                value = self._render(value, node, path)
        elif isinstance(node, SequenceNode):
            items = [self.any_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node.value)]
            value = BAD if any(v is BAD for v in items) else items
        else:
            value = {}
            for key, _k, vnode in self.entries(node, path):  # type: ignore[arg-type]
                item = self.any_value(vnode, join(path, key), depth + 1)
                if item is BAD:
                    value = BAD
                elif value is not BAD:
                    value[key] = item
        self._any_memo[id(node)] = (node, value)
        return value

    def dataclass(self, node: Node, cls: type, path: str, *, exclude: frozenset[str] = frozenset()) -> Any:
        kwargs = self.fields(node, cls, path, exclude=exclude)
        if kwargs is BAD:
            return BAD
        try:
            return cls(**kwargs)
        except TypeError:  # a required field was missing or bad; already reported
            return BAD

    def fields(self, node: Node, cls: type, path: str, *, exclude: frozenset[str] = frozenset(),
               only: frozenset[str] | None = None, ignore_prefix: str | None = None) -> Any:
        """The keyword arguments a mapping gives for `cls`; unknown keys get a did-you-mean."""
        all_fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in exclude]  # type: ignore[arg-type]
        fields = {f.name: f for f in all_fields if only is None or f.name in only}
        if not isinstance(node, MappingNode):
            return self._wrong_kind(node, cls, path, f"keys: {', '.join(fields)}")
        names: dict[str, str] = {}
        for f in fields.values():
            names[f.name] = f.name
            for alias in f.metadata.get("aliases", ()):
                names[alias] = f.name
        hints = type_hints(cls)
        kwargs: dict[str, Any] = {}
        given: dict[str, str] = {}
        failed: set[str] = set()
        for key, knode, vnode in self.entries(node, path):
            kpath = join(path, key)
            fname = names.get(key)
            if fname is None:
                if key in exclude or (ignore_prefix and key.startswith(ignore_prefix)):
                    continue
                allowed = fields if only is None else only
                valid = [f.name for f in dataclasses.fields(cls) if f.name in allowed]  # type: ignore[arg-type]
                what = "the top level" if not path else f"'{path}'"
                self.error(f"unknown key '{key}'{did_you_mean(key, [*names, *valid])}", knode, kpath,
                           f"valid keys for {what}: {', '.join(valid)}")
                continue
            if fname in given:
                self.error(f"'{key}' and '{given[fname]}' set the same option; keep one", knode, kpath)
                continue
            given[fname] = key
            mark = self.mark(vnode if isinstance(vnode, ScalarNode) else knode)
            self.marks[kpath] = mark
            self.marks.setdefault(join(path, fname), mark)
            f = fields[fname]
            if f.metadata.get("argv") and isinstance(vnode, SequenceNode):
                value = self._argv(vnode, kpath, key)
            else:
                value = self.convert(vnode, hints.get(fname, Any), kpath, f.metadata)
            if value is NULL:
                if _default_exists(f):
                    continue
                value = self.error(f"'{key}' needs a value", vnode, kpath)
            if value is BAD:
                failed.add(fname)
                continue
            kwargs[fname] = value
        for f in fields.values():
            if not _default_exists(f) and f.name not in kwargs and f.name not in failed:
                self.error(f"missing required key '{f.name}'", node, join(path, f.name))
                failed.add(f.name)
        return kwargs

    def _argv(self, node: SequenceNode, path: str, key: str) -> Any:
        """Both a flat argv list and Packer's list of lists (`[["-device", "x"], ...]`), flattened."""
        out: list[str] = []
        bad = False
        for i, item in enumerate(node.value):
            ipath = f"{path}[{i}]"
            self.marks[ipath] = self.mark(item)
            words = [(f"{ipath}[{j}]", w) for j, w in enumerate(item.value)] \
                if isinstance(item, SequenceNode) else [(ipath, item)]
            for wpath, word in words:
                value = self.convert(word, str, wpath)
                if value is NULL:
                    value = self.error(f"empty {key} word", word, wpath)
                bad |= value is BAD
                out.append(value)
        return BAD if bad else out

    def _tagged_union(self, node: Node, classes: tuple[type, ...], path: str, tag: str) -> Any:
        """A provisioner-style union: the `tag` key's value (each class's Literal) picks the class."""
        registry = {typing.get_args(type_hints(c).get(tag))[0]: c for c in classes}
        valid = ", ".join(registry)
        tpath = join(path, tag)
        if not isinstance(node, MappingNode):
            return self.error(f"expected a mapping with a '{tag}' key, got {kind(node)}", node, path,
                              f"types: {valid}")
        type_node = next((v for k, _kn, v in self.entries(node, path) if k == tag), None)
        if type_node is None:
            return self.error(f"missing required key '{tag}'", node, tpath, f"types: {valid}")
        name = self.convert(type_node, str, tpath)
        if name is BAD or name is NULL:
            return BAD if name is BAD else self.error(f"'{tag}' needs a value", type_node, tpath,
                                                      f"types: {valid}")
        cls = registry.get(name)
        if cls is None:
            return self.error(f"unknown type '{name}'{did_you_mean(name, registry)}", type_node,
                              tpath, f"types: {valid}")
        return self.dataclass(node, cls, path)

    # -- plain values ---------------------------------------------------------------------------------
    def coerce(self, value: Any, tp: Any, path: str, mark: Mark,
               meta: Mapping[str, Any] | None = None) -> Any:
        """A plain value (from YAML or from rendering) as type `tp`; errors are recorded at `mark`."""
        meta = meta or {}
        tp, optional = unwrap_optional(tp)
        if value is None:
            if optional or tp is Any:
                return None
            if tp is str:
                value = ""
        if tp is Any or tp is object:
            return value
        show = self.problems.show
        origin = typing.get_origin(tp)
        if origin is Literal:
            allowed = [str(a) for a in typing.get_args(tp)]
            text = text_of(value) if not isinstance(value, list | dict) else None
            if text not in allowed:
                return self.error(f"{show(value)} is not one of: {', '.join(allowed)}"
                                  f"{did_you_mean(text or '', allowed)}", mark, path)
            return next(a for a in typing.get_args(tp) if str(a) == text)
        if tp in (str, Path):
            if isinstance(value, list | dict):
                return self.error(f"expected a string, got {show(value)}", mark, path)
            text = text_of(value)
            for unit, parse, examples in _UNITS:  # kept as written, checked now (metadata "duration"/"size")
                if meta.get(unit):
                    try:
                        parse(text)
                    except ValueError as e:
                        return self.error(f"invalid {unit}: {self.problems.mask(str(e))}", mark, path,
                                          examples)
            return Path(text) if tp is Path else text
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            return self.error(f"expected true or false, got {show(value)}", mark, path)
        if tp in (int, float):
            try:
                return parse_number(value, tp)
            except ValueError:
                what = "an integer" if tp is int else "a number"
                return self.error(f"expected {what}, got {show(value)}", mark, path)
        if origin in (list, tuple):
            item_tp = typing.get_args(tp)[0] if typing.get_args(tp) else Any
            items = value if isinstance(value, list | tuple) else [value]
            out = [self.coerce(v, item_tp, f"{path}[{i}]", mark, meta) for i, v in enumerate(items)]
            if BAD in out:
                return BAD
            return tuple(out) if origin is tuple else out
        if origin is dict or tp is dict:
            args = typing.get_args(tp)
            value_tp = args[1] if len(args) == 2 else Any
            if isinstance(value, list):
                pairs_: dict[str, Any] = {}
                for i, item in enumerate(value):
                    if not isinstance(item, str) or "=" not in item:
                        return self.error(f"expected KEY=VALUE, got {show(item)}", mark, f"{path}[{i}]")
                    k, v = item.split("=", 1)
                    pairs_[k] = v
                value = pairs_
            if not isinstance(value, dict):
                return self.error(f"expected a mapping, got {show(value)}", mark, path)
            result = {str(k): self.coerce(v, value_tp, join(path, str(k)), mark) for k, v in value.items()}
            return BAD if BAD in result.values() else result
        if _is_union(tp):  # e.g. `int | str` in an exporter's options: first type that fits
            for option in typing.get_args(tp):
                trial = Problems()
                saved, self.problems = self.problems, trial
                try:
                    out = self.coerce(value, option, path, mark, meta)
                finally:
                    self.problems = saved
                if out is not BAD:
                    return out
            return self.error(f"{show(value)} does not fit {tp}", mark, path)
        if dataclasses.is_dataclass(tp):
            return self.error(f"expected a mapping, got {show(value)}", mark, path,
                              "write the mapping in YAML; an expression cannot produce it")
        return value
