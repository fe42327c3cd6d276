"""YAML with positions: PyYAML's node API, so every key and value keeps its file:line:col for errors."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import Mark, TemplateError, TemplateErrors
from baker.secrets import MASK, MASKER

NULL_TAG = "tag:yaml.org,2002:null"
STR_TAG = "tag:yaml.org,2002:str"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MERGE_TAG = "tag:yaml.org,2002:merge"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
_MAX_MERGE_DEPTH = 32
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class Problems:
    """Collects template errors so one run reports them all; masks secrets in every message."""

    def __init__(self, main_file: str = "") -> None:
        self.errors: list[TemplateError] = []
        self.main_file = main_file
        self.secrets: list[str] = []  # sensitive values known to this load (MASKER ignores short ones)
        self.tainted: set[str] = set()  # key paths that already have an error (later checks skip them)
        self._seen: set[str] = set()

    def mask(self, text: str) -> str:
        for s in sorted((s for s in self.secrets if len(s) >= 3), key=len, reverse=True):
            text = text.replace(s, MASK)
        return MASKER.mask(text)

    def show(self, value: Any) -> str:
        """A short, secret-free rendering of a bad value for an error message."""
        if isinstance(value, str) and any(s and s in value for s in self.secrets):
            return MASK
        if isinstance(value, list | tuple):
            return "a list"
        if isinstance(value, dict):
            return "a mapping"
        text = repr(value) if isinstance(value, str) else json.dumps(value) if value is None else str(value)
        text = text if len(text) <= 70 else text[:67] + "..."
        return self.mask(text)

    def add(self, message: str, mark: Mark | None = None, path: str = "", hint: str | None = None) -> None:
        err = TemplateError(self.mask(message), mark=mark, path=path,
                            hint=self.mask(hint) if hint else None)
        key = str(err)
        if path:
            self.tainted.add(path)
        if key not in self._seen:
            self._seen.add(key)
            self.errors.append(err)

    def has_error_under(self, path: str) -> bool:
        return any(t == path or t.startswith((path + ".", path + "[")) for t in self.tainted)

    def check(self) -> None:
        """Raise what was collected: one `TemplateError`, or `TemplateErrors` sorted by position."""
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]

        def order(e: TemplateError) -> tuple[int, int, int]:
            if e.mark is None:
                return (0, 0, 0)
            return (0 if e.mark.file == self.main_file else 1, e.mark.line, e.mark.col)

        raise TemplateErrors(sorted(self.errors, key=order))


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def join(path: str, key: str) -> str:
    """Key path for a child: `a.b`, or `a["odd key"]` when the key is not a plain word."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def mark_of(node: Node, file: str) -> Mark:
    """A node's position; a node spliced in from an included fragment names its own file."""
    name = node.start_mark.name
    own = name if isinstance(name, str) and name and not name.startswith("<") else file
    return Mark(own, node.start_mark.line + 1, node.start_mark.column + 1)


class _NamedLoader(yaml.SafeLoader):
    """A SafeLoader whose marks carry the file's name, so nodes keep it after an `include`."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name


def kind(node: Node) -> str:
    """What a node is, in the words an error message uses."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "an empty value" if node.tag == NULL_TAG else "a single value"


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def read_document(path: Path, display: str) -> tuple[Node | None, bytes]:
    """Read and compose one YAML document; every failure is a `TemplateError` at the right position."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TemplateError(f"file not found: {display}") from None
    except OSError as e:
        raise TemplateError(f"cannot read {display}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TemplateError(f"not valid UTF-8 text (byte 0x{data[e.start]:02x})",
                            mark=Mark(display, line, col), hint="save the file as UTF-8") from None
    return compose(text, display), data


def compose(text: str, display: str) -> Node | None:
    try:
        loader = _NamedLoader(text, display)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        pm = e.problem_mark or e.context_mark
        mark = Mark(display, pm.line + 1, pm.column + 1) if pm else None
        problem = e.problem or "invalid YAML"
        if e.context and e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            problem += f" ({e.context} at line {e.context_mark.line + 1})"
        elif e.context:
            problem = f"{e.context}: {problem}"
        raise TemplateError(f"YAML syntax error: {problem}", mark=mark) from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        raise TemplateError(f"YAML syntax error: {e.reason} (character {e.character!r})",
                            mark=Mark(display, line, col)) from None
    except yaml.YAMLError as e:
        raise TemplateError(f"YAML syntax error: {e}", mark=Mark(display, 1, 1)) from None
    except RecursionError:
        raise TemplateError("YAML nesting is too deep", mark=Mark(display, 1, 1)) from None


def pairs(node: MappingNode, problems: Problems, file: str, path: str,
          _depth: int = 0) -> list[tuple[str, ScalarNode, Node]]:
    """The entries of a mapping with `<<` merges applied; duplicate and non-string keys are errors."""
    explicit: list[tuple[str, ScalarNode, Node]] = []
    merged: list[tuple[str, ScalarNode, Node]] = []
    seen: dict[str, ScalarNode] = {}
    for knode, vnode in node.value:
        if knode.tag == MERGE_TAG:
            merged.extend(_merge_sources(vnode, problems, file, path, _depth))
            continue
        if not isinstance(knode, ScalarNode):
            hint = None
            if isinstance(knode, MappingNode) and knode.flow_style:
                hint = 'a value that starts with {{ must be quoted: "{{ ... }}"'
            problems.add(f"keys must be plain strings, not {kind(knode)}", mark_of(knode, file), path, hint)
            continue
        key = knode.value
        if key in seen:
            first = seen[key].start_mark.line + 1
            problems.add(f"duplicate key '{key}' (first given on line {first})", mark_of(knode, file),
                         join(path, key), "remove one of them; YAML would silently keep only the last")
            continue
        seen[key] = knode
        explicit.append((key, knode, vnode))
    out = [p for p in merged if p[0] not in seen]
    taken = set()
    unique = []
    for p in out:  # among merged sources the first one wins, as YAML specifies
        if p[0] not in taken:
            taken.add(p[0])
            unique.append(p)
    return unique + explicit


def _merge_sources(vnode: Node, problems: Problems, file: str, path: str,
                   depth: int) -> list[tuple[str, ScalarNode, Node]]:
    if depth > _MAX_MERGE_DEPTH:
        problems.add("'<<' merges nest too deeply (a recursive alias?)", mark_of(vnode, file), path)
        return []
    if isinstance(vnode, MappingNode):
        return pairs(vnode, problems, file, path, depth + 1)
    if isinstance(vnode, SequenceNode) and all(isinstance(v, MappingNode) for v in vnode.value):
        out: list[tuple[str, ScalarNode, Node]] = []
        for v in vnode.value:
            out.extend(pairs(v, problems, file, path, depth + 1))  # type: ignore[arg-type]
        return out
    problems.add("'<<' must merge a mapping or a list of mappings", mark_of(vnode, file), path)
    return []


class BadScalar(ValueError):
    """A scalar PyYAML cannot turn into a value (unknown tag, malformed number)."""


def scalar_value(node: ScalarNode, *, raw: bool = False) -> Any:
    """The Python value of a scalar; `raw` keeps the text as written for string fields (`1.10` stays)."""
    tag = node.tag
    if tag == NULL_TAG:
        return None
    if tag in (STR_TAG, TIMESTAMP_TAG) or (raw and tag in (BOOL_TAG, INT_TAG, FLOAT_TAG)):
        return node.value
    if tag in (BOOL_TAG, INT_TAG, FLOAT_TAG):
        try:
            return _CONSTRUCTOR.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as e:
            raise BadScalar(f"cannot read {node.value!r} as a number: {e}") from None
    raise BadScalar(f"unsupported YAML tag '{tag}'")
