"""Packer HCL2 templates through python-hcl2; lines come from the source text (the parser keeps none)."""

from __future__ import annotations

import re
from typing import Any

from baker.packer_import.nodes import Obj, PackerDoc, PackerVar, Plugin, UnreadableTemplate


class _Lines:
    """Finds blocks and attributes in the text, in order, so each gets the line it is written on."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def block(self, head: str, start: int = 0) -> tuple[int, int]:
        """(first, last) 0-based line of the next block whose header matches `head` at or after start."""
        pattern = re.compile(r"^\s*" + head + r"\s*\{")
        for n in range(start, len(self.lines)):
            if pattern.match(self.lines[n]):
                return n, self._end(n)
        return start, len(self.lines) - 1

    def _end(self, first: int) -> int:
        depth, opened = 0, False
        for n in range(first, len(self.lines)):
            text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', self.lines[n]).split("#", 1)[0]
            depth += text.count("{") - text.count("}")
            opened = opened or "{" in text
            if opened and depth <= 0:
                return n
        return len(self.lines) - 1

    def key(self, key: str, first: int, last: int) -> int:
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for n in range(first, last + 1):
            if pattern.match(self.lines[n]):
                return n + 1
        return first + 1

    def body(self, data: dict[str, Any], first: int, last: int) -> Obj:
        out = Obj(first + 1)
        for k, v in data.items():
            if k.startswith("__"):
                continue
            out[k] = _plain(v)
            out.lines[k] = self.key(k, first, last)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if not str(k).startswith("__")}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _q(name: str) -> str:
    return '"' + re.escape(name) + '"'


_LOCALS_WHY = ("HCL expressions are not converted: rewrite it under baker's locals: as Jinja "
               "({{ local.NAME }})")


def read_hcl(text: str, file: str) -> PackerDoc:
    try:
        import hcl2
        from hcl2.utils import SerializationOptions
    except ImportError as e:
        raise UnreadableTemplate(f"cannot read HCL2: python-hcl2 >= 8.1 is not installed ({e})", 1) from None

    options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True,
                                   preserve_heredocs=False)
    try:
        data = hcl2.loads(text, serialization_options=options)
    except Exception as e:  # lark's errors carry a line; anything else is still a syntax problem
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise UnreadableTemplate(f"invalid HCL2: {first}", getattr(e, "line", 1) or 1) from None
    lines = _Lines(text)
    doc = PackerDoc(file=file, syntax="hcl2")
    for block in data.get("variable", []):
        for name, body in block.items():
            first, last = lines.block(r"variables?\s+" + _q(name))
            doc.variables.append(_variable(name, body or {}, lines, first, last))
    for block in data.get("source", []):
        for kind, named in block.items():
            for name, body in named.items():
                first, last = lines.block(r"source\s+" + _q(kind) + r"\s+" + _q(name))
                body_obj = lines.body(body, first, last)
                doc.builders.append(Plugin(kind, body_obj, f"source.{kind}.{name}", name))
    builds = data.get("build", [])
    build_first = 0
    for n, build in enumerate(builds):
        build_first, build_last = lines.block(r"build", build_first)
        if n > 0:
            doc.leftovers.append((f"build[{n}]", build_first + 1,
                                  "a baker template is one build: convert this build block separately"))
            build_first = build_last + 1
            continue
        _build(build, lines, build_first, build_last, doc)
        build_first = build_last + 1
    for section, why in (("locals", _LOCALS_WHY),
                         ("local", _LOCALS_WHY),
                         ("data", "data sources have no baker equivalent")):
        for block in data.get(section, []):
            for name in block:
                if not name.startswith("__"):
                    doc.leftovers.append((f"{section}.{name}", _find(lines, name), why))
    if "packer" in data:
        doc.notes.append(("packer", _find(lines, "packer"), "baker needs no plugins or Packer version"))
    for section in data:
        if section not in ("variable", "variables", "source", "build", "locals", "local", "data", "packer"):
            doc.leftovers.append((section, _find(lines, section), "not a block baker knows"))
    return doc


def _find(lines: _Lines, word: str) -> int:
    w = re.escape(word)
    pattern = re.compile(r"^\s*" + w + r"\b|\b" + w + r"\s*=|\"" + w + '"')
    return next((n + 1 for n, text in enumerate(lines.lines) if pattern.search(text)), 1)


def _variable(name: str, body: dict[str, Any], lines: _Lines, first: int, last: int) -> PackerVar:
    v = PackerVar(name, first + 1)
    for k, value in body.items():
        if k.startswith("__"):
            continue
        if k == "default":
            v.default, v.has_default = _plain(value), True
        elif k == "type":
            v.type = str(value).removeprefix("${").removesuffix("}")
        elif k == "sensitive":
            v.sensitive = value is True or value == "true"
        elif k == "description":
            v.description = str(value)
        else:
            v.extra[k] = lines.key(k, first, last)
    return v


def _build(build: dict[str, Any], lines: _Lines, first: int, last: int, doc: PackerDoc) -> None:
    cursor: dict[tuple[str, str], int] = {}

    def plugins(kind: str, blocks: list[dict[str, Any]], where: str) -> list[Plugin]:
        out = []
        for block in blocks:
            for ptype, body in block.items():
                if ptype.startswith("__"):
                    continue
                pfirst, plast = lines.block(kind + r"\s+" + _q(ptype), cursor.get((kind, ptype), first))
                cursor[(kind, ptype)] = pfirst + 1
                out.append(Plugin(ptype, lines.body(body or {}, pfirst, plast), f"{where}[{len(out)}]",
                                  str((body or {}).get("name", ""))))
        return out

    doc.provisioners = plugins("provisioner", build.get("provisioner", []), "build.provisioner")
    posts = plugins("post-processor", build.get("post-processor", []), "build.post-processor")
    for chain in build.get("post-processors", []):
        posts += plugins("post-processor", chain.get("post-processor", []), "build.post-processors")
    doc.post_processors = sorted(posts, key=lambda p: p.body.line)
    for k in build:
        if k in ("provisioner", "post-processor", "post-processors", "sources", "name") or k.startswith("__"):
            continue
        line = lines.key(k, first, last)
        if line == first + 1:  # a nested block (source, error-cleanup-provisioner), not an attribute
            line = _find(lines, k)
        doc.leftovers.append((f"build.{k}", line, "no baker equivalent"))
