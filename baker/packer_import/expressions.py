"""Packer's template expressions in strings, as baker's Jinja2: `{{user `x`}}` and `${var.x}` → `{{ var.x }}`.

Whatever has no baker equivalent is kept as literal text (escaped, so the template still loads) and
reported, never dropped. Literal `{{`, `{%` and `{#` in Packer text (e.g. shell's `${#array[@]}`) are
escaped too, since baker would read them as Jinja2.
"""

from __future__ import annotations

import re

_GO = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_HCL = re.compile(r"(?<!\$)\$\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_WORD = r"[`\"]([^`\"]+)[`\"]"

# Go-template (JSON templates, and boot_command/execute_command in HCL2 too)
_GO_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"user\s+" + _WORD), r"{{ var.\1 }}"),
    (re.compile(r"env\s+" + _WORD), r"{{ env_or('\1', '') }}"),
    (re.compile(r"timestamp"), "{{ timestamp() }}"),
    (re.compile(r"uuid"), "{{ uuid() }}"),
    (re.compile(r"isotime"), "{{ isotime() }}"),
    (re.compile(r"isotime\s+" + _WORD), r"{{ isotime('\1') }}"),
    (re.compile(r"template_dir"), "{{ template_dir }}"),
    (re.compile(r"build_name|\.Name"), "{{ name }}"),
    (re.compile(r"build_type"), "qemu"),
    (re.compile(r"\.HTTPIP"), "{{ build.http_ip }}"),
    (re.compile(r"\.HTTPPort"), "{{ build.http_port }}"),
    (re.compile(r"\.HTTPAddr"), "{{ build.http_ip }}:{{ build.http_port }}"),
    (re.compile(r"\.SSHPublicKey"), "{{ build.ssh_public_key }}"),
]
_HCL_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"var\.([A-Za-z_][A-Za-z0-9_-]*)"), r"{{ var.\1 }}"),
    (re.compile(r"path\.root|path\.cwd"), "{{ template_dir }}"),
    (re.compile(r"timestamp\(\)"), "{{ timestamp() }}"),
    (re.compile(r"uuidv4\(\)"), "{{ uuid() }}"),
    (re.compile(r"env\(\s*\"([^\"]+)\"\s*\)"), r"{{ env_or('\1', '') }}"),
    (re.compile(r"source\.name|build\.name"), "{{ name }}"),
    (re.compile(r"build\.HTTPIP"), "{{ build.http_ip }}"),
    (re.compile(r"build\.HTTPPort"), "{{ build.http_port }}"),
]
# `{{ .Vars }}`/`{{ .Path }}` belong to execute_command; baker fills them in itself
_EXECUTE = re.compile(r"\.(Vars|Path)")


def _escape(literal: str) -> str:
    return re.sub(r"\{[{%#]", lambda m: "{{ '" + m.group() + "' }}", literal)


def _rule(expr: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, repl in rules:
        if pattern.fullmatch(expr):
            return pattern.sub(repl, expr)
    return None


def convert_text(text: str, *, hcl: bool, execute: bool = False) -> tuple[str, list[str]]:
    """(baker text, expressions that could not be converted). `${...}` is HCL2 only (in JSON: shell)."""
    unknown: list[str] = []
    out: list[str] = []
    pos = 0
    tokens = [(m, "go") for m in _GO.finditer(text)]
    if hcl:
        tokens = sorted(tokens + [(m, "hcl") for m in _HCL.finditer(text)], key=lambda t: t[0].start())
    for m, kind in tokens:
        if m.start() < pos:
            continue  # nested in a token already handled
        out.append(_literal(text[pos:m.start()], hcl))
        expr = m.group(1).strip()
        if kind == "go" and execute and _EXECUTE.fullmatch(expr):
            done = "{% raw %}{{ " + expr[1:].lower() + " }}{% endraw %}"
        else:
            done = _rule(expr, _GO_RULES if kind == "go" else _HCL_RULES)
        if done is None:
            unknown.append(m.group())
            done = _escape(m.group())
        out.append(done)
        pos = m.end()
    out.append(_literal(text[pos:], hcl))
    return "".join(out), unknown


def _literal(text: str, hcl: bool) -> str:
    return _escape(text.replace("$${", "${").replace("%%{", "%{") if hcl else text)
