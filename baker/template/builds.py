"""Named builds (`builds:`): one template, several variants sharing provisioners, like Packer's sources.

Each entry has a `name` and overrides top-level sections. A variant is the template with its entry
merged in at the YAML-node level (mappings key by key, lists and scalars replaced, `null` removes a
key), so every later check and error mark works as for a plain template, and marks of overridden
values point into the `builds:` entry. The variant is named `<name>-<build>`: its own output dir,
lock, Make rule and store name, with nothing else to teach those parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import Mark, TemplateError
from baker.template.yamlnodes import NULL_TAG, Problems, did_you_mean, kind, mark_of, pairs, read_document

KEY = "builds"
# what a build may override; name, variables and provisioners are the template's, shared by all builds
OVERRIDABLE = ("description", "version", "source", "machine", "communicator", "shutdown", "generalize",
               "exports", "post", "policy", "scan", "sign")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class BuildDecl:
    """One `builds:` entry: its name, where it is written, and its overrides (YAML nodes)."""

    name: str
    mark: Mark
    overrides: tuple[tuple[str, ScalarNode, Node], ...]


def declared(root: MappingNode, display: str) -> list[BuildDecl]:
    """The template's builds, checked (names, duplicates, keys); [] when it has no `builds:`.

    Raises TemplateError(s) with file:line:col and the key path for every bad entry at once.
    """
    node = next((v for k, v in root.value if isinstance(k, ScalarNode) and k.value == KEY), None)
    if node is None:
        return []
    problems = Problems(display)
    where = mark_of(node, display)
    if not isinstance(node, SequenceNode) or not node.value:
        what = "an empty list" if isinstance(node, SequenceNode) else kind(node)
        problems.add(f"'builds' must be a non-empty list of {{name: ..., overrides...}}, got {what}", where,
                     KEY, "e.g. builds: [{name: bios}, {name: uefi, machine: {firmware: uefi}}]")
        problems.check()
    out: list[BuildDecl] = []
    first: dict[str, int] = {}
    for i, item in enumerate(node.value):
        path = f"{KEY}[{i}]"
        if not isinstance(item, MappingNode):
            problems.add(f"expected a mapping with a 'name' key, got {kind(item)}", mark_of(item, display),
                         path)
            continue
        entries = pairs(item, problems, display, path)
        name_node = next((v for k, _kn, v in entries if k == "name"), None)
        name = name_node.value if isinstance(name_node, ScalarNode) and name_node.tag != NULL_TAG else ""
        if name_node is None or not name:
            problems.add("a build needs a name", mark_of(name_node or item, display), f"{path}.name",
                         "e.g. name: uefi (the build is then <template name>-uefi)")
        elif not _NAME.fullmatch(str(name)):
            problems.add(f"build name '{name}' may only use letters, digits, '.', '_' and '-'",
                         mark_of(name_node, display), f"{path}.name")
        elif name in first:
            problems.add(f"duplicate build name '{name}' (first given on line {first[name]})",
                         mark_of(name_node, display), f"{path}.name", "give every build its own name")
        else:
            first[name] = name_node.start_mark.line + 1
        for key, knode, _v in entries:
            if key != "name" and key not in OVERRIDABLE:
                shared = key in ("variables", "provisioners", KEY)
                problems.add(f"a build cannot set '{key}'" if shared or key == "name" else
                             f"unknown key '{key}' in a build{did_you_mean(key, OVERRIDABLE)}",
                             mark_of(knode, display), f"{path}.{key}",
                             "variables and provisioners are shared by every build" if shared else
                             f"a build may override: {', '.join(OVERRIDABLE)}")
        out.append(BuildDecl(str(name), mark_of(item, display),
                             tuple(e for e in entries if e[0] != "name")))
    problems.check()
    return out


def build_names(path: str | Path) -> list[str]:
    """The build names a template file declares ([] for a plain one), without rendering anything."""
    root, _data = read_document(Path(path), str(path))
    return [b.name for b in declared(root, str(path))] if isinstance(root, MappingNode) else []


def select(root: MappingNode, build: str | None, display: str) -> tuple[MappingNode, str | None]:
    """The document to load for `build`: the template with that entry merged in and `builds:` removed."""
    decls = declared(root, display)
    if not decls:
        if build is not None:
            raise TemplateError(f"the template has no builds: list, so there is no build '{build}'",
                                mark=Mark(display, 1, 1))
        return root, None
    names = [d.name for d in decls]
    if build is None:
        raise TemplateError(f"the template defines builds {', '.join(names)}: name one",
                            mark=decls[0].mark, hint="baker build builds them all; --only NAME picks some")
    chosen = next((d for d in decls if d.name == build), None)
    if chosen is None:
        raise TemplateError(f"no build '{build}'{did_you_mean(build, names)}", mark=decls[0].mark,
                            hint=f"this template's builds: {', '.join(names)}")
    problems = Problems(display)
    base = [(k, v) for key, k, v in pairs(root, problems, display, "") if key != KEY]
    return MappingNode(root.tag, _merge(base, chosen.overrides, problems, display), flow_style=False,
                       start_mark=root.start_mark, end_mark=root.end_mark), chosen.name


def _merge(base: list[tuple[Node, Node]], over: tuple[tuple[str, ScalarNode, Node], ...] | list,
           problems: Problems, display: str) -> list[tuple[Node, Node]]:
    out = list(base)
    for key, knode, vnode in over:
        at = next((i for i, (k, _v) in enumerate(out) if isinstance(k, ScalarNode) and k.value == key), None)
        if isinstance(vnode, ScalarNode) and vnode.tag == NULL_TAG:
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append((knode, vnode))
            continue
        old = out[at][1]
        if isinstance(old, MappingNode) and isinstance(vnode, MappingNode):
            inner = [(k, v) for _key, k, v in pairs(old, problems, display, key)]
            merged = _merge(inner, pairs(vnode, problems, display, key), problems, display)
            vnode = MappingNode(old.tag, merged, flow_style=False, start_mark=vnode.start_mark,
                                end_mark=vnode.end_mark)
        out[at] = (out[at][0], vnode)
    return out
