"""Template inputs: declarations, the four value sources in precedence order, type coercion, secrets.

Precedence (low→high): default, BAKER_VAR_<name>, --var-file files in order, -var. Values from the
environment and the command line are strings, so they are coerced to the declared type; without a
declared `type` the default's YAML type is used, so `port: 80` accepts `-var port=8080` as an int.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from baker.errors import Mark, TemplateError
from baker.secrets import MASK, MASKER
from baker.template.convert import BAD, Converter, parse_number
from baker.template.model import Variable
from baker.template.yamlnodes import Problems, did_you_mean, join, kind, read_document

log = logging.getLogger("baker.template")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPECT = {"string": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
           "list": "a list (e.g. [a, b])", "map": "a mapping (e.g. {k: v})"}
_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}


@dataclass
class _Candidate:
    value: Any
    origin: str
    mark: Mark | None
    path: str


@dataclass
class Resolved:
    variables: dict[str, Variable]
    values: dict[str, Any]
    sensitive: list[str]


def infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return "string"


def coerce_var(value: Any, type_: str) -> Any:
    """`value` as the declared type; ValueError (without the value in it) when it does not fit."""
    if type_ == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
    elif type_ in ("int", "float"):
        try:
            return parse_number(value, int if type_ == "int" else float)
        except ValueError:
            pass
    elif type_ == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _BOOLS:
            return _BOOLS[str(value).strip().lower()]
    elif type_ in ("list", "map"):
        want = list if type_ == "list" else dict
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else want()
            except yaml.YAMLError:
                raise ValueError(f"expected {_EXPECT[type_]} in YAML/JSON flow syntax") from None
        if isinstance(value, want):
            return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    raise ValueError(f"expected {_EXPECT.get(type_, type_)}")


def leaves(value: Any) -> list[str]:
    """Every scalar inside a value, as text: what a sensitive value's masking must cover."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in leaves(v)]
    return [] if value is None else [str(value)]


def _shown(value: Any, sensitive: bool, problems: Problems) -> str:
    return MASK if sensitive else problems.show(value)


def resolve(node: Node | None, conv: Converter, *, cli_vars: Mapping[str, str],
            var_files: list[str | Path] | tuple[str | Path, ...], environ: Mapping[str, str]) -> Resolved:
    """Declarations plus values; errors go to `conv.problems` (the caller raises them)."""
    problems = conv.problems
    declared: dict[str, Variable] = {}
    decl_marks: dict[str, Mark] = {}
    candidates: dict[str, list[_Candidate]] = {}

    if node is not None and not (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
        if not isinstance(node, MappingNode):
            conv.error(f"'variables' must be a mapping of name: declaration, got {kind(node)}", node,
                       "variables")
        else:
            for name, knode, vnode in conv.entries(node, "variables"):
                path = join("variables", name)
                decl_marks[name] = conv.mark(knode)
                conv.marks[path] = conv.mark(knode)
                if not _NAME.fullmatch(name):
                    conv.error(f"invalid variable name '{name}'", knode, path,
                               "use letters, digits and _ (it is written var.NAME and BAKER_VAR_NAME)")
                    continue
                var = _declaration(vnode, conv, path)
                if var is None:
                    continue
                declared[name] = var
                if var.default is not None:
                    dpath = path + ".default" if isinstance(vnode, MappingNode) else path
                    candidates[name] = [_Candidate(var.default, "its default", conv.marks.get(dpath), dpath)]

    for name in declared:
        env_value = environ.get(f"BAKER_VAR_{name}")
        if env_value is not None:
            origin = f"environment variable BAKER_VAR_{name}"
            cand = _Candidate(env_value, origin, None, join("variables", name))
            candidates.setdefault(name, []).append(cand)

    for vf in var_files:
        _read_var_file(Path(vf), str(vf), declared, candidates, problems)

    for key, value in (cli_vars or {}).items():
        if key not in declared:
            names = ", ".join(sorted(declared)) or "none"
            problems.add(f"-var {key}=...: no variable '{key}' is declared{did_you_mean(key, declared)}",
                         hint=f"declared variables: {names}; declare new ones under `variables:`")
            continue
        cand = _Candidate(value, f"-var {key}=...", None, join("variables", key))
        candidates.setdefault(key, []).append(cand)

    sensitive = [n for n, v in declared.items() if v.sensitive]
    for name in sensitive:  # before any coercion error could show a value
        for cand in candidates.get(name, []):
            for leaf in leaves(cand.value):
                MASKER.add(leaf)
                if leaf:
                    problems.secrets.append(leaf)

    values: dict[str, Any] = {}
    for name, var in declared.items():
        cands = candidates.get(name)
        if not cands:
            if var.required:
                problems.add(f"variable '{name}' is required but has no value", decl_marks.get(name),
                             join("variables", name),
                             f"set it with -var {name}=..., the environment variable BAKER_VAR_{name}, "
                             f"or a --var-file entry '{name}: ...'")
                continue
            values[name] = {"string": "", "list": [], "map": {}}.get(var.type)
            continue
        cand = cands[-1]
        try:
            values[name] = coerce_var(cand.value, var.type)
        except ValueError as e:
            problems.add(f"variable '{name}' from {cand.origin}: {e}, got "
                         f"{_shown(cand.value, var.sensitive, problems)}", cand.mark, cand.path,
                         f"'{name}' is declared with type: {var.type}")
            continue
        if var.sensitive:
            for leaf in leaves(values[name]):
                MASKER.add(leaf)
                if leaf:
                    problems.secrets.append(leaf)
    return Resolved(declared, values, sensitive)


def _declaration(vnode: Node, conv: Converter, path: str) -> Variable | None:
    if isinstance(vnode, MappingNode):
        kwargs = conv.fields(vnode, Variable, path)
        if kwargs is BAD:
            return None
        if "type" not in kwargs:
            kwargs["type"] = infer_type(kwargs.get("default"))
        var = Variable(**kwargs)
    else:
        conv.marks[path] = conv.mark(vnode)
        default = conv.any_value(vnode, path)
        if default is BAD:
            return None
        var = Variable(default=default, type=infer_type(default))  # type: ignore[arg-type]
    if var.default is not None:
        try:
            var.default = coerce_var(var.default, var.type)
        except ValueError as e:
            shown = MASK if var.sensitive else conv.problems.show(var.default)
            dpath = path + ".default" if isinstance(vnode, MappingNode) else path
            conv.error(f"default {e}, got {shown}", conv.marks.get(dpath) or vnode, dpath,
                       f"the variable is declared with type: {var.type}")
            return None
    return var


def _read_var_file(path: Path, display: str, declared: dict[str, Variable],
                   candidates: dict[str, list[_Candidate]], problems: Problems) -> None:
    try:
        node, _data = read_document(path, display)
    except TemplateError as e:
        problems.add(f"--var-file {display}: {e.message}", e.mark, e.path, e.hint)
        return
    if node is None:
        return
    conv = Converter(problems, display, {})
    if not isinstance(node, MappingNode):
        conv.error(f"a --var-file must be a mapping of name: value, got {kind(node)}", node, "")
        return
    for name, knode, vnode in conv.entries(node, ""):
        if name not in declared:
            log.warning("%s: variable '%s' is not declared in the template%s; ignored",
                        conv.mark(knode), name, did_you_mean(name, declared))
            continue
        value = conv.any_value(vnode, name)
        if value is not BAD:
            candidates.setdefault(name, []).append(_Candidate(value, display, conv.mark(vnode), name))
