"""Load a template file into a validated `Template`; render late fields; a JSON view for `inspect`.

Order matters: variables are resolved first (their errors are raised alone, since every later string
that uses a broken variable would only repeat them), then `name`, then everything else in one pass
that collects all errors, then paths and cross-field checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from baker.errors import Mark, TemplateError
from baker.secrets import MASK, MASKER
from baker.template import builds, checks, post_checks, sources_check, variables
from baker.template import locals as locals_
from baker.template.convert import BAD, NULL, Converter
from baker.template.include import INCLUDE_KEY, resolve_includes
from baker.template.model import ExportSpec, RenderState, Template
from baker.template.render import Namespace, Renderer, RenderError, packer_compat
from baker.template.yamlnodes import NULL_TAG, Problems, did_you_mean, kind, read_document

USER_KEYS = frozenset({"name", "description", "version", "include", "variables", "locals", "source",
                       "machine", "communicator",
                       "provisioners", "shutdown", "generalize", "exports", "post",
                       "policy", "scan", "sign", builds.KEY, "checkpoints", "checkpoint_ttl"})
EXTENSION_PREFIX = "x-"  # top-level keys that only hold YAML anchors, as in docker-compose


def load_template(path: str | Path, *, cli_vars: dict[str, str] | None = None,
                  var_files: list[str | Path] | tuple[str | Path, ...] = (),
                  environ: Mapping[str, str] | None = None, build: str | None = None) -> Template:
    """Read, render and validate a template; raises `TemplateError` or `TemplateErrors`.

    A template with `builds:` loads one build at a time (`build`), named `<name>-<build>`.
    """
    try:
        return _load(path, cli_vars or {}, var_files, environ, build)
    except RecursionError:
        raise TemplateError("the template nests too deeply (or uses a recursive alias)",
                            mark=Mark(str(path), 1, 1)) from None


def _load(path: str | Path, cli_vars: dict[str, str], var_files: list[str | Path] | tuple[str | Path, ...],
          environ: Mapping[str, str] | None, build: str | None = None) -> Template:
    display = str(path)
    abs_path = Path(os.path.abspath(path))
    template_dir = abs_path.parent
    env = os.environ if environ is None else environ
    root, data = read_document(abs_path if Path(path).is_absolute() else Path(path), display)
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG):
        raise TemplateError("the template is empty", mark=Mark(display, 1, 1),
                            hint="a template is a mapping with at least name: and source:")
    if not isinstance(root, MappingNode):
        raise TemplateError(f"the template must be a mapping of keys (name:, source:, ...), got {kind(root)}",
                            mark=Mark(display, root.start_mark.line + 1, root.start_mark.column + 1))

    problems = Problems(display)
    include_node = next((v for k, v in root.value if isinstance(k, ScalarNode) and k.value == INCLUDE_KEY),
                        None)
    root, fragments = resolve_includes(root, display, abs_path, problems)
    problems.check()  # a missing fragment would only cause follow-up errors
    root, build = builds.select(root, build, display)  # a build's overrides win over included parts
    marks: dict[str, Mark] = {"": Mark(display, 1, 1)}
    conv = Converter(problems, display, marks)
    top = {key: (knode, vnode) for key, knode, vnode in conv.entries(root, "")}  # type: ignore[arg-type]

    resolved = variables.resolve(top.get("variables", (None, None))[1], conv, cli_vars=cli_vars,
                                 var_files=var_files, environ=env)
    problems.check()

    now = datetime.now(UTC)
    local_values = locals_.declare(top.get("locals", (None, None))[1], conv)
    conv.renderer = Renderer(values=resolved.values, environ=env, name=None, template_dir=template_dir,
                             now=now, locals_=local_values)
    local_values.evaluate_all()
    secret_locals = locals_.sensitive_locals(local_values, resolved.sensitive)
    for lname in secret_locals:
        for leaf in variables.leaves(local_values.values.get(lname)):
            MASKER.add(leaf)
            if leaf:
                problems.secrets.append(leaf)
    problems.check()
    conv.renderer.local = Namespace(local_values.values, "local")
    conv.renderer.context["local"] = conv.renderer.local
    name = ""
    if "name" in top:
        knode, vnode = top["name"]
        marks["name"] = conv.mark(vnode if isinstance(vnode, ScalarNode) else knode)
        value = conv.convert(vnode, str, "name")
        if value is NULL:
            conv.error("'name' needs a value", vnode, "name", "e.g. name: debian-12-nginx")
        elif value is not BAD:
            name = f"{value}-{build}" if build else value
    else:
        problems.add("missing required key 'name'", Mark(display, 1, 1), "name",
                     "add e.g. name: debian-12-nginx (it names the output files)")
    conv.renderer.set_name(name)

    kwargs = conv.fields(root, Template, "", exclude=frozenset({"name", "variables", "exports", "locals",
                                                                 "include"}),
                         only=USER_KEYS, ignore_prefix=EXTENSION_PREFIX)
    exports = _exports(conv, top.get("exports", (None, None))[1])
    t = Template(name=name, path=abs_path, **(kwargs if kwargs is not BAD else {}),
                 variables=resolved.variables, exports=exports, values=resolved.values,
                 sensitive_values=resolved.sensitive, sha256=hashlib.sha256(data).hexdigest(), marks=marks,
                 var_files=[Path(os.path.abspath(f)) for f in var_files],
                 include=_include_list(include_node), locals=dict(local_values.values),
                 sensitive_locals=secret_locals, included_files=fragments.files)

    where = checks.Where(marks, problems, Mark(display, 1, 1))
    checks.resolve_paths(t, "", template_dir, where, dirs=fragments.dirs)
    checks.check(t, where)
    post_checks.check_post(t, where)
    t.warnings = sources_check.check_sources(t, where, problems)
    problems.check()
    t.render_state = RenderState(environ, now)
    return t


def _include_list(node: Node | None) -> list[str]:
    """The template's own `include:` as written (already checked by resolve_includes)."""
    if isinstance(node, ScalarNode) and node.tag != NULL_TAG:
        return [str(node.value)]
    if isinstance(node, SequenceNode):
        return [str(n.value) for n in node.value if isinstance(n, ScalarNode)]
    return []


def _exporters() -> dict[str, type]:
    """The export registry, imported late: templates load without importing every exporter's deps."""
    return importlib.import_module("baker.export").EXPORTERS


def _exports(conv: Converter, node: Node | None) -> list[ExportSpec]:
    try:
        registry = _exporters()
    except Exception as e:  # a broken install, not a template problem, but report it the same way
        conv.problems.add(f"cannot load the exporters (baker.export): {type(e).__name__}: {e}")
        return []
    valid = ", ".join(sorted(registry))
    if node is None or (isinstance(node, ScalarNode) and node.tag == NULL_TAG):
        if "qcow2" not in registry:
            conv.problems.add("no default export: the qcow2 exporter is not registered")
            return []
        return [ExportSpec("qcow2", registry["qcow2"].Options(), None)]
    if not isinstance(node, SequenceNode) or not node.value:
        conv.error(f"'exports' must be a non-empty list of {{type: ..., options...}}, got "
                   f"{'an empty list' if isinstance(node, SequenceNode) else kind(node)}", node, "exports",
                   f"types: {valid}; leave exports out for a single qcow2")
        return []
    specs: list[ExportSpec] = []
    for i, item in enumerate(node.value):
        path = f"exports[{i}]"
        conv.marks[path] = conv.mark(item)
        if not isinstance(item, MappingNode):
            conv.error(f"expected a mapping with a 'type' key, got {kind(item)}", item, path,
                       f"types: {valid}")
            continue
        type_node = next((v for k, _kn, v in conv.entries(item, path) if k == "type"), None)
        if type_node is None:
            conv.error("missing required key 'type'", item, f"{path}.type", f"types: {valid}")
            continue
        type_name = conv.convert(type_node, str, f"{path}.type")
        if type_name is BAD or type_name is NULL:
            if type_name is NULL:
                conv.error("'type' needs a value", type_node, f"{path}.type", f"types: {valid}")
            continue
        conv.marks[f"{path}.type"] = conv.mark(type_node)
        exporter = registry.get(type_name)
        if exporter is None:
            conv.error(f"unknown export type '{type_name}'{did_you_mean(type_name, registry)}", type_node,
                       f"{path}.type", f"types: {valid}")
            continue
        options = conv.dataclass(item, exporter.Options, path, exclude=frozenset({"type"}))
        if options is not BAD:
            specs.append(ExportSpec(type_name, options, conv.mark(item)))
    return specs


def render_late(text: str, template: Template, build: Mapping[str, Any], *, path: str = "") -> str:
    """Render a late field (boot_command item, http_content/cd_content value, append) at build time.

    The context is the load-time one plus `build.*`; `path` (e.g. "source.boot_command[3]") only
    makes a failure point at the right line of the template.
    """
    state = template.render_state
    environ = os.environ if state is None or state.environ is None else state.environ
    now = state.now if state is not None else datetime.now(UTC)
    renderer = Renderer(values=template.values, environ=environ, name=template.name,
                        template_dir=template.path.parent, now=now, build=build, locals_=template.locals)
    try:
        return renderer.render(packer_compat(text), native_result=False)
    except RenderError as e:
        problems = Problems()
        problems.secrets = _secrets(template)
        problems.add(e.message, template.marks.get(path), path, e.hint)
        raise problems.errors[0] from None


def _secrets(t: Template) -> list[str]:
    out: list[str] = []
    for name in t.sensitive_values:
        out += variables.leaves(t.values.get(name))
        var = t.variables.get(name)
        if var is not None:
            out += variables.leaves(var.default)
    for name in t.sensitive_locals:
        out += variables.leaves(t.locals.get(name))
    return [s for s in out if s]


def template_to_dict(t: Template) -> dict[str, Any]:
    """A JSON-safe view of the resolved template for `baker inspect`; secrets show as <sensitive>."""
    secrets = sorted(set(_secrets(t)), key=len, reverse=True)

    def text(s: str) -> str:
        if s in secrets:
            return MASK
        for secret in secrets:
            if len(secret) >= 3:
                s = s.replace(secret, MASK)
        return MASKER.mask(s)

    def plain(obj: Any) -> Any:
        if isinstance(obj, ExportSpec):
            return {"type": obj.type, "options": plain(obj.options)}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                    if f.name not in ("marks", "render_state", "warnings")}
        if isinstance(obj, str):
            return text(obj)
        if isinstance(obj, Path):
            return text(str(obj))
        if isinstance(obj, dict):
            return {text(str(k)): plain(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple | set | frozenset):
            return [plain(v) for v in obj]
        if obj is None or isinstance(obj, bool | int | float):
            return obj
        return text(str(obj))

    out: dict[str, Any] = plain(t)
    for name in t.sensitive_values:
        if name in out["values"]:
            out["values"][name] = MASK
        var = out["variables"].get(name)
        if var is not None and var.get("default") is not None:
            var["default"] = MASK
    for name in t.sensitive_locals:
        if name in out["locals"]:
            out["locals"][name] = MASK
    return out
