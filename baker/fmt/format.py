"""`baker fmt`: a template in the canonical key order and style, comments kept.

ruamel.yaml does the round trip (comments, quotes, flow/block style, anchors and tags stay as
written); baker only reorders mapping keys (model order, see order.py; unknown keys keep their
slots), sets one indentation style, and never re-wraps: a string the author broke over several
lines becomes a folded block (`>-`) broken at the same places. Before anything is written, the
result is loaded again and must mean exactly what the input meant, or the file is left alone.
"""

from __future__ import annotations

import io
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import FoldedScalarString
from ruamel.yaml.tokens import CommentToken
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import BakerError
from baker.fmt.order import child_rule, field_rank
from baker.fsutil import atomic_write
from baker.template.model import Template


class FormatError(BakerError):
    """A file fmt cannot format (not YAML, duplicate keys, or a result that would mean otherwise)."""

    exit_code = 2


def _yaml() -> YAML:
    y = YAML()  # round-trip mode
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)  # "key:\n  - item": the style of templates/
    y.width = 1 << 16  # never re-wrap; multi-line strings keep their breaks as folded blocks
    return y


# --- key order ---------------------------------------------------------------------------------------

def _holder(container: Any, key: Any) -> tuple[Any, Any]:
    """The block collection whose last entry ends `container[key]`'s text, and that entry's key."""
    value = container[key]
    if isinstance(value, CommentedMap | CommentedSeq) and len(value) and not value.fa.flow_style():
        return _holder(value, list(value.keys())[-1] if isinstance(value, CommentedMap) else len(value) - 1)
    return container, key


def _slot_index(holder: Any) -> int:
    return 2 if isinstance(holder, CommentedMap) else 0


def _take_following(container: Any, key: Any) -> str:
    """Detach the lines after `key`'s value (blank lines, comment lines); its end-of-line comment stays.

    ruamel keeps them after the last scalar's token, or in `ca.end` after a flow collection."""
    holder, hkey = _holder(container, key)
    rest = ""
    items = holder.ca.items.get(hkey)
    tok = items[_slot_index(holder)] if items else None
    if tok is not None and isinstance(getattr(tok, "value", None), str):
        head, sep, rest = tok.value.partition("\n")
        tok.value = head + sep
    if holder is not container or isinstance(holder, CommentedSeq):
        ends = getattr(holder.ca, "end", None) or []
        rest += "".join(t.value for t in ends if isinstance(getattr(t, "value", None), str))
        holder.ca.end = []
    return rest


def _put_following(container: Any, key: Any, text: str) -> None:
    if not text:
        return
    holder, hkey = _holder(container, key)
    value = holder[hkey]
    if isinstance(value, CommentedMap | CommentedSeq) and isinstance(holder, CommentedSeq):
        holder.ca.end = [*(holder.ca.end or []), CommentToken(text, CommentMark(0), None)]
        return
    items = holder.ca.items.setdefault(hkey, [None, None, None, None])
    i = _slot_index(holder)
    tok = items[i]
    if tok is None:
        items[i] = CommentToken("\n" + text, CommentMark(0), None)
    else:
        tok.value = (tok.value if tok.value.endswith("\n") else tok.value + "\n") + text


def _reorder(m: CommentedMap, cls: type) -> None:
    """Known keys sorted by the model; unknown keys keep their positions (nothing is dropped).

    Comment lines and blank lines above a key move with it; those after the last key stay last."""
    if getattr(m, "merge", None):  # `<<:` merges: reordering would expand them; leave as written
        return
    rank = field_rank(cls)
    keys = list(m.keys())
    known = sorted((k for k in keys if isinstance(k, str) and k in rank), key=lambda k: rank[k])
    it = iter(known)
    order = [next(it) if isinstance(k, str) and k in rank else k for k in keys]
    if order == keys:
        return
    above = {keys[i + 1]: _take_following(m, k) for i, k in enumerate(keys[:-1])}
    trailing = _take_following(m, keys[-1])
    for k in order:
        m.move_to_end(k)
    for prev, k in itertools.pairwise(order):
        _put_following(m, prev, above.get(k, ""))
    if above.get(order[0]):  # the new first key's own comment: keep it just after it
        _put_following(m, order[0], above[order[0]])
    _put_following(m, order[-1], trailing)


def _keep_anchors(value: Any, depth: int = 0) -> None:
    """ruamel drops an anchor nothing refers to (`x-base: &base {...}` waiting for its first use)."""
    anchor = getattr(value, "anchor", None)
    if anchor is not None and getattr(anchor, "value", None):
        anchor.always_dump = True
    if depth < 64 and isinstance(value, CommentedMap | CommentedSeq):
        for child in value.values() if isinstance(value, CommentedMap) else value:
            _keep_anchors(child, depth + 1)


def _walk(value: Any, cls: type | None) -> None:
    if cls is None or not isinstance(value, CommentedMap):
        return
    _reorder(value, cls)
    for key, child in value.items():
        rule = child_rule(cls, key) if isinstance(key, str) else None
        if rule is None:
            continue
        kind, what = rule
        if kind == "class":
            _walk(child, what)
        elif kind == "values" and isinstance(child, CommentedMap):
            for v in child.values():
                _walk(v, what)
        elif kind == "items" and isinstance(child, CommentedSeq):
            for item in child:
                if isinstance(item, CommentedMap) and isinstance(item.get("type"), str):
                    _walk(item, what.get(item["type"]))


# --- multi-line strings ------------------------------------------------------------------------------

def _multiline_scalars(text: str) -> dict[tuple[Any, ...], list[str]]:
    """Path -> source lines of every plain or quoted scalar written over several lines."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines = text.splitlines()
    out: dict[tuple[Any, ...], list[str]] = {}

    def walk(node: Node, path: tuple[Any, ...], depth: int) -> None:
        if depth > 64:
            return
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode):
                    walk(v, (*path, k.value), depth + 1)
        elif isinstance(node, SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i), depth + 1)
        elif isinstance(node, ScalarNode) and node.style in (None, '"', "'") \
                and node.end_mark.line > node.start_mark.line:
            s, e = node.start_mark, node.end_mark
            seg = [lines[s.line][s.column:], *lines[s.line + 1:e.line], lines[e.line][:e.column]]
            seg = [x.strip() for x in seg if x.strip()]
            if node.style:
                seg[0], seg[-1] = seg[0][1:], seg[-1][:-1]
            out[path] = seg
    if root is not None:
        walk(root, (), 0)
    return out


def _fold(data: Any, text: str) -> None:
    """Keep the author's line breaks: such a string becomes `>-` broken at the same places."""
    for path, segments in _multiline_scalars(text).items():
        parent, value = None, data
        for part in path:
            try:
                parent, value = value, value[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if parent is None or not isinstance(value, str) or " ".join(segments) != value:
            continue  # escapes, blank lines, odd spacing: leave it to ruamel as one line
        folded = FoldedScalarString(value)
        pos, folds = 0, []
        for seg in segments[:-1]:
            pos += len(seg)
            folds.append(pos)
            pos += 1
        folded.fold_pos = folds  # type: ignore[attr-defined]
        parent[path[-1]] = folded
        # a block scalar ends its own last line: the comment token's first newline would double it
        items = getattr(parent, "ca", None) and parent.ca.items.get(path[-1])
        i = 2 if isinstance(parent, CommentedMap) else 0
        tok = items[i] if items else None
        if tok is not None and isinstance(tok.value, str) and tok.value.startswith("\n"):
            tok.value = tok.value[1:]


# --- meaning ---------------------------------------------------------------------------------------

class _Tagged(yaml.SafeLoader):
    """Loads custom tags (`!include x`) as plain (tag, value) pairs, to compare meanings."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return ("!" + suffix, loader.construct_scalar(node))
    if isinstance(node, SequenceNode):
        return ("!" + suffix, tuple(loader.construct_sequence(node, deep=True)))
    return ("!" + suffix, str(loader.construct_mapping(node, deep=True)))  # type: ignore[arg-type]


_Tagged.add_multi_constructor("!", _tagged)


def meaning(text: str) -> Any:
    """What a YAML text means to baker's loader (PyYAML, YAML 1.1), key order aside."""
    return yaml.load(text, Loader=_Tagged)  # a SafeLoader subclass


# --- formatting ------------------------------------------------------------------------------------

def _split_start(text: str) -> tuple[str, str]:
    """(comments and directives through a `---` line, the rest): ruamel drops what is above `---`."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        word = line.strip()
        if word == "---" or word.startswith("--- "):
            return "".join(lines[:i + 1]), "".join(lines[i + 1:])
        if word and not word.startswith(("#", "%")):
            break
    return "", text


def format_text(text: str, name: str = "<template>") -> str:
    """The canonical form of a template's text; FormatError if it cannot be formatted safely."""
    prefix, body = _split_start(text)
    y = _yaml()
    try:
        data = y.load(body)
        if data is None:
            return text
        _keep_anchors(data)
        _walk(data, Template)
        _fold(data, body)
        out = io.StringIO()
        y.dump(data, out)
    except YAMLError as e:
        raise FormatError(f"{name}: cannot format: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise FormatError(f"{name}: cannot format: nested too deeply") from None
    result = prefix + out.getvalue()
    try:
        before = meaning(text)
        tidy = result.rstrip("\n") + "\n"  # one trailing newline (unless a `|+` block keeps more)
        result = tidy if meaning(tidy) == before else result
        same = meaning(result) == before
    except (yaml.YAMLError, RecursionError):
        same = False
    if not same:
        raise FormatError(f"{name}: not formatted: the result would not mean the same as the file "
                          "(please report this); the file is left as it is")
    return result


@dataclass
class Outcome:
    path: Path
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def format_file(path: Path, *, write: bool) -> Outcome:
    """Format one file; with `write`, replace it atomically (temp + rename) keeping its mode."""
    try:
        before = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    outcome = Outcome(path, before, format_text(before, str(path)))
    if write and outcome.changed:
        real = Path(os.path.realpath(path))  # through a symlink, not over it
        atomic_write(real, outcome.after, mode=stat.S_IMODE(real.stat().st_mode))
    return outcome


def template_files(args: list[str]) -> list[Path]:
    """Files as given; a directory means its *.yaml and *.yml files (not recursive), sorted."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        else:
            out.append(p)
    return out
