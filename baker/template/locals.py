"""`locals:`: named values computed once, from variables, env, helpers and other locals, used as
`{{ local.NAME }}` (Packer's `local.`).

Each local is evaluated on first use, so the dependency order comes from the expressions themselves
(no declaration order to get right); a local asked for while it is being computed is a cycle, named
in full. All locals are evaluated at load time, used or not, so an error in one is never a surprise
at build time. A local computed from a sensitive variable (or from such a local) is sensitive too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.template.convert import BAD, Converter
from baker.template.render import AlreadyReported, HelperError
from baker.template.yamlnodes import NULL_TAG, join, kind

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Locals(Mapping[str, Any]):
    """The `local` namespace while a template loads: values on demand, with cycle detection."""

    def __init__(self, conv: Converter, nodes: dict[str, Node]) -> None:
        self.conv = conv
        self.nodes = nodes
        self.values: dict[str, Any] = {}
        self.failed: set[str] = set()
        self._stack: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.failed:
            raise AlreadyReported(name)
        if name not in self.nodes:
            raise KeyError(name)
        if name in self._stack:
            chain = " -> ".join(f"local.{n}" for n in [*self._stack[self._stack.index(name):], name])
            raise HelperError(f"locals form a cycle: {chain}")
        self._stack.append(name)
        try:
            value = self.conv.any_value(self.nodes[name], join("locals", name))
        finally:
            self._stack.pop()
        if value is BAD:
            self.failed.add(name)
            raise AlreadyReported(name)
        self.values[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def evaluate_all(self) -> None:
        for name in self.nodes:
            try:
                self[name]
            except (AlreadyReported, HelperError):
                pass  # reported where the failing expression is


def declare(node: Node | None, conv: Converter) -> Locals:
    """The `locals:` mapping's entries (not yet evaluated); bad names are reported."""
    nodes: dict[str, Node] = {}
    if node is None or (isinstance(node, ScalarNode) and node.tag == NULL_TAG):
        return Locals(conv, nodes)
    if not isinstance(node, MappingNode):
        conv.error(f"'locals' must be a mapping of name: value, got {kind(node)}", node, "locals",
                   'e.g. locals: {stamp: "{{ timestamp() }}"}, used as {{ local.stamp }}')
        return Locals(conv, nodes)
    for name, knode, vnode in conv.entries(node, "locals"):
        path = join("locals", name)
        conv.marks[path] = conv.mark(vnode if isinstance(vnode, ScalarNode) else knode)
        if not _NAME.fullmatch(name):
            conv.error(f"invalid local name '{name}'", knode, path,
                       "use letters, digits and _ (it is written local.NAME)")
            continue
        nodes[name] = vnode
    return Locals(conv, nodes)


def _texts(node: Node, depth: int = 0) -> Iterator[str]:
    if depth > 64:
        return
    if isinstance(node, ScalarNode):
        yield str(node.value)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _texts(item, depth + 1)
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            yield from _texts(k, depth + 1)
            yield from _texts(v, depth + 1)


def _refers(text: str, namespace: str, name: str) -> bool:
    """Whether an expression text reads `namespace.name` (or `namespace['name']`)."""
    n = re.escape(name)
    return re.search(rf"\b{namespace}\s*(\.\s*{n}\b|\[\s*['\"]{n}['\"])", text) is not None


def sensitive_locals(locals_: Locals, sensitive_vars: list[str]) -> list[str]:
    """Locals whose expressions read a sensitive variable, directly or through other locals."""
    texts = {name: "\n".join(_texts(node)) for name, node in locals_.nodes.items()}
    out: list[str] = [n for n, text in texts.items() if any(_refers(text, "var", v) for v in sensitive_vars)]
    changed = True
    while changed:
        changed = False
        for name, text in texts.items():
            if name not in out and any(_refers(text, "local", s) for s in out):
                out.append(name)
                changed = True
    return out
