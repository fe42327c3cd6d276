"""Packer's legacy JSON templates, parsed with the line of every key (json.loads keeps none)."""

from __future__ import annotations

import json
import re
from typing import Any

from baker.packer_import.nodes import Obj, PackerDoc, PackerVar, Plugin, UnreadableTemplate

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WS = re.compile(r"[ \t\n\r]*")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def line(self, i: int | None = None) -> int:
        return self.s.count("\n", 0, self.i if i is None else i) + 1

    def fail(self, what: str) -> UnreadableTemplate:
        return UnreadableTemplate(f"invalid JSON: {what}", self.line())

    def ws(self) -> None:
        self.i = _WS.match(self.s, self.i).end()  # type: ignore[union-attr]

    def value(self) -> Any:
        self.ws()
        if self.i >= len(self.s):
            raise self.fail("unexpected end of file")
        c = self.s[self.i]
        if c == "{":
            return self.obj()
        if c == "[":
            return self.arr()
        if c == '"':
            return self.string()
        for word, v in (("true", True), ("false", False), ("null", None)):
            if self.s.startswith(word, self.i):
                self.i += len(word)
                return v
        m = _NUMBER.match(self.s, self.i)
        if not m:
            raise self.fail(f"unexpected {c!r}")
        self.i = m.end()
        text = m.group()
        return float(text) if any(ch in text for ch in ".eE") else int(text)

    def string(self) -> str:
        try:
            text, self.i = json.decoder.scanstring(self.s, self.i + 1)
        except json.JSONDecodeError as e:
            raise UnreadableTemplate(f"invalid JSON: {e.msg}", self.line(e.pos)) from None
        return text

    def obj(self) -> Obj:
        out = Obj(self.line())
        if self.opened("}"):
            return out
        while True:
            self.ws()
            if not self.s.startswith('"', self.i):
                raise self.fail("expected a quoted key")
            line = self.line()
            key = self.string()
            self.ws()
            if not self.s.startswith(":", self.i):
                raise self.fail("expected ':' after a key")
            self.i += 1
            out[key] = self.value()
            out.lines[key] = line
            if self.closed("}"):
                return out

    def arr(self) -> list[Any]:
        out: list[Any] = []
        if self.opened("]"):
            return out
        while True:
            out.append(self.value())
            if self.closed("]"):
                return out

    def opened(self, closer: str) -> bool:
        """Step over the opening bracket; True when the container is empty."""
        self.i += 1
        self.ws()
        if self.s.startswith(closer, self.i):
            self.i += 1
            return True
        return False

    def closed(self, closer: str) -> bool:
        """After an item: a comma (False, more follow) or the closing bracket (True)."""
        self.ws()
        if self.s.startswith(",", self.i):
            self.i += 1
            return False
        if self.s.startswith(closer, self.i):
            self.i += 1
            return True
        raise self.fail(f"expected ',' or '{closer}'")


def parse(text: str) -> Any:
    p = _Parser(text)
    value = p.value()
    p.ws()
    if p.i != len(text):
        raise p.fail("extra text after the template")
    return value


def read_json(text: str, file: str) -> PackerDoc:
    root = parse(text)
    if not isinstance(root, Obj):
        raise UnreadableTemplate("a Packer template is a JSON object", 1)
    doc = PackerDoc(file=file, syntax="json")
    for key in root:
        line = root.at(key)
        value = root[key]
        if key == "builders":
            doc.builders = _plugins(value, "builders", line)
        elif key == "provisioners":
            doc.provisioners = _plugins(value, "provisioners", line)
        elif key == "post-processors":
            doc.post_processors = _post_processors(value, line)
        elif key == "variables" and isinstance(value, Obj):
            doc.variables += [PackerVar(n, value.at(n), default=v, has_default=v is not None)
                              for n, v in value.items()]
        elif key == "sensitive-variables" and isinstance(value, list):
            for v in doc.variables:
                v.sensitive = v.sensitive or v.name in value
        elif key == "description" and isinstance(value, str):
            doc.description = value
        elif key.startswith("_"):
            continue  # Packer's comment convention
        elif key == "min_packer_version":
            doc.notes.append((key, line, "baker has no Packer version to check"))
        else:
            doc.leftovers.append((key, line, "not a section baker knows"))
    return doc


def _plugins(value: Any, where: str, line: int) -> list[Plugin]:
    out = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        if isinstance(item, Obj):
            out.append(Plugin(str(item.get("type", "")), item, f"{where}[{i}]", str(item.get("name", ""))))
    return out


def _post_processors(value: Any, line: int) -> list[Plugin]:
    """Packer's post-processors: names, objects, or lists of them (a chain); flattened in order."""
    out: list[Plugin] = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        for j, pp in enumerate(item if isinstance(item, list) else [item]):
            where = f"post-processors[{i}]" + (f"[{j}]" if isinstance(item, list) else "")
            if isinstance(pp, str):
                body = Obj(line)
                body["type"] = pp
                out.append(Plugin(pp, body, where))
            elif isinstance(pp, Obj):
                out.append(Plugin(str(pp.get("type", "")), pp, where))
    return out
