"""Shared YAML fragments: the top-level `include:` list and the `!include FILE` tag, resolved on
YAML nodes before anything is converted.

Working on nodes (not on loaded values) is what keeps errors honest: a fragment's nodes keep their
own file name in their marks (see yamlnodes.mark_of), so a typo inside `common/machine.yaml` is
reported at `common/machine.yaml:LINE:COL` even though it is checked as part of the template.

The merge rule of `include:` (documented in README "Sharing parts of templates"):
  - fragments are merged in the order listed, then the template itself on top;
  - mappings merge key by key, recursively; on a conflict the later file (the template last) wins;
  - the step lists `provisioners` and `post` concatenate: the fragments' steps first, in include
    order, then the template's own; every other list (exports, qemuargs, ...) is replaced whole.
`!include FILE` at any value position is replaced by the fragment's content; as an item of a list,
a fragment that is itself a list is spliced in place, so shared steps can sit between own steps.
Paths are relative to the file that names them; a fragment may include others (cycles are errors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import TemplateError
from baker.template.yamlnodes import MAP_TAG, NULL_TAG, Problems, join, kind, mark_of, read_document

INCLUDE_KEY = "include"
INCLUDE_TAG = "!include"
CONCAT_KEYS = frozenset({"provisioners", "post"})  # top-level lists that concatenate
_MAX_DEPTH = 16


@dataclass
class Fragments:
    """What resolving includes found: every fragment file read (absolute, in first-use order) and
    each display name's folder, so relative paths inside a fragment resolve against it."""

    files: list[Path] = field(default_factory=list)
    dirs: dict[str, Path] = field(default_factory=dict)

    def add(self, path: Path, display: str) -> None:
        if path not in self.files:
            self.files.append(path)
        self.dirs[display] = path.parent


class _Resolver:
    def __init__(self, problems: Problems, found: Fragments) -> None:
        self.problems = problems
        self.found = found
        # aliases share nodes: expand each once (a billion laughs stays small), and leave a
        # recursive alias as it is (the converter reports it)
        self._done: dict[int, tuple[Node, Node]] = {}
        self._busy: set[int] = set()

    def error(self, message: str, node: Node, file: str, path: str, hint: str | None = None) -> None:
        self.problems.add(message, mark_of(node, file), path, hint)

    # -- reading a fragment -------------------------------------------------------------------------
    def fragment(self, ref_node: ScalarNode, file: str, stack: tuple[Path, ...], path: str) -> Node | None:
        """The expanded root node of the fragment `ref_node` names (relative to `file`), or None."""
        ref = ref_node.value.strip() if isinstance(ref_node.value, str) else ""
        if not ref or ref_node.tag == NULL_TAG:
            self.error("an include needs a file name", ref_node, file, path,
                       "e.g. include: [common/machine.yaml] or !include common/steps.yaml")
            return None
        base = Path(os.path.abspath(file)).parent if file not in self.found.dirs else self.found.dirs[file]
        target = Path(os.path.normpath(base / os.path.expanduser(ref)))
        display = ref if os.path.isabs(ref) else os.path.normpath(os.path.join(os.path.dirname(file), ref))
        if target in stack:
            chain = " -> ".join([*(p.name for p in stack[stack.index(target):]), target.name])
            self.error(f"include cycle: {chain}", ref_node, file, path,
                       "a fragment cannot include itself, directly or through others")
            return None
        if len(stack) > _MAX_DEPTH:
            self.error("includes nest too deeply", ref_node, file, path)
            return None
        if not target.is_file():
            self.error(f"included file not found: {ref} (looked for {target})", ref_node, file, path,
                       "include paths are relative to the file that names them")
            return None
        try:
            root, _data = read_document(target, display)
        except TemplateError as e:
            self.problems.add(e.message, e.mark, e.path, e.hint)
            return None
        self.found.add(target, display)
        if root is None:
            return ScalarNode(NULL_TAG, "", ref_node.start_mark, ref_node.end_mark)
        return self.expand(root, display, (*stack, target), "", top=True)

    # -- walking ------------------------------------------------------------------------------------
    def expand(self, node: Node, file: str, stack: tuple[Path, ...], path: str, *, top: bool = False) -> Node:
        """`node` with every `!include` replaced; at a document's top, its `include:` merged in."""
        if isinstance(node, ScalarNode) and node.tag != INCLUDE_TAG:
            return node
        key = id(node)
        if key in self._done and self._done[key][0] is node:
            return self._done[key][1]
        if key in self._busy:
            return node
        self._busy.add(key)
        try:
            out = self._expand(node, file, stack, path, top=top)
        finally:
            self._busy.discard(key)
        self._done[key] = (node, out)
        return out

    def _expand(self, node: Node, file: str, stack: tuple[Path, ...], path: str, *, top: bool) -> Node:
        if isinstance(node, ScalarNode):
            if node.tag == INCLUDE_TAG:
                return self.fragment(node, file, stack, path) or ScalarNode(
                    NULL_TAG, "", node.start_mark, node.end_mark)
            return node
        if isinstance(node, SequenceNode):
            items: list[Node] = []
            for i, item in enumerate(node.value):
                ipath = f"{path}[{i}]"
                if isinstance(item, ScalarNode) and item.tag == INCLUDE_TAG:
                    got = self.fragment(item, file, stack, ipath)
                    if got is None:
                        continue
                    items += got.value if isinstance(got, SequenceNode) else [got]
                else:
                    items.append(self.expand(item, file, stack, ipath))
            return SequenceNode(node.tag, items, node.start_mark, node.end_mark, node.flow_style)
        if not isinstance(node, MappingNode):
            return node
        pairs_: list[tuple[Node, Node]] = []
        includes: Node | None = None
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, ScalarNode) else None
            if top and key == INCLUDE_KEY:
                includes = vnode
                continue
            pairs_.append((knode, self.expand(vnode, file, stack, join(path, str(key)))))
        out = MappingNode(node.tag, pairs_, node.start_mark, node.end_mark, node.flow_style)
        if includes is None:
            return out
        merged: MappingNode | None = None
        for i, ref in enumerate(self._refs(includes, file)):
            frag = self.fragment(ref, file, stack, f"{INCLUDE_KEY}[{i}]")
            if frag is None or (isinstance(frag, ScalarNode) and frag.tag == NULL_TAG):
                continue
            if not isinstance(frag, MappingNode):
                self.error(f"a fragment named in include: must be a mapping of template keys, got "
                           f"{kind(frag)}", frag, file, f"{INCLUDE_KEY}[{i}]",
                           "use !include FILE at a value's position for a list or a single value")
                continue
            merged = frag if merged is None else merge(merged, frag)
        return out if merged is None else merge(merged, out)

    def _refs(self, node: Node, file: str) -> list[ScalarNode]:
        if isinstance(node, ScalarNode) and node.tag != NULL_TAG:
            return [node]
        if isinstance(node, SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                if isinstance(item, ScalarNode):
                    out.append(item)
                else:
                    self.error(f"expected a file name, got {kind(item)}", item, file, f"{INCLUDE_KEY}[{i}]")
            return out
        if not (isinstance(node, ScalarNode) and node.tag == NULL_TAG):
            self.error(f"'include' must be a list of file names, got {kind(node)}", node, file, INCLUDE_KEY,
                       "e.g. include: [common/machine.yaml, common/steps.yaml]")
        return []


class _Tolerant(yaml.SafeLoader):
    """Reads a fragment's data with its tags (`!include x`) as ("!tag", value) pairs."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return ("!" + suffix, loader.construct_scalar(node))
    if isinstance(node, SequenceNode):
        return ("!" + suffix, loader.construct_sequence(node, deep=True))
    return ("!" + suffix, loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]


_Tolerant.add_multi_constructor("!", _tagged)


def fragment_meaning(path: Path) -> Any:
    """A fragment's data, comments and layout aside (what a build fingerprint should see);
    OSError when it cannot be read, its text when it is not valid YAML."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return yaml.load(text, Loader=_Tolerant)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError):
        return text


def _key(node: Node) -> str | None:
    return node.value if isinstance(node, ScalarNode) and node.tag != "tag:yaml.org,2002:merge" else None


def merge(base: MappingNode, over: MappingNode, *, depth: int = 0) -> MappingNode:
    """`over` on top of `base` (see the module docstring); new nodes, the inputs are not changed.

    Duplicate keys within one file are kept as they are, so the loader still reports them."""
    over_keys = {k for kn, _v in over.value if (k := _key(kn)) is not None}
    base_first: dict[str, Node] = {}
    for kn, vn in base.value:
        k = _key(kn)
        if k is not None:
            base_first.setdefault(k, vn)
    out: list[tuple[Node, Node]] = [(kn, vn) for kn, vn in base.value if _key(kn) not in over_keys]
    for kn, vn in over.value:
        k = _key(kn)
        old = base_first.get(k) if k is not None else None
        if isinstance(old, MappingNode) and isinstance(vn, MappingNode) and old.tag == vn.tag == MAP_TAG:
            vn = merge(old, vn, depth=depth + 1)
        elif depth == 0 and k in CONCAT_KEYS and isinstance(old, SequenceNode):
            if isinstance(vn, SequenceNode):
                vn = SequenceNode(vn.tag, [*old.value, *vn.value], vn.start_mark, vn.end_mark, vn.flow_style)
            elif vn.tag == NULL_TAG:
                vn = old  # `provisioners:` left empty in the template keeps the fragments' steps
        out.append((kn, vn))
    return MappingNode(over.tag, out, over.start_mark, over.end_mark, over.flow_style)


def resolve_includes(root: MappingNode, display: str, path: Path,
                     problems: Problems) -> tuple[Node, Fragments]:
    """The template's root with every include resolved, and the fragments read."""
    found = Fragments()
    found.dirs[display] = path.parent
    out = _Resolver(problems, found).expand(root, display, (path,), "", top=True)
    return out, found
