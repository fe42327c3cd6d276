"""Jinja2 rendering of template strings: `var.*`, `env.*`, helpers, and late `build.*` values.

Why a whole-string expression is evaluated natively: `cpus: "{{ var.cpus }}"` must give the int 4 and
`qemuargs: "{{ var.extra }}"` a list, not the text of one. Why Jinja comments are `{## ##}`: YAML has
its own comments, and `{#` is common shell syntax (`${#array[@]}`) inside inline scripts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import urllib.parse
import uuid as _uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.utils import missing

from baker.template.yamlnodes import did_you_mean

_WHOLE = re.compile(r"\A\{\{-?(?P<expr>.*?)-?\}\}\Z", re.S)
_PACKER = re.compile(r"\{\{\s*\.(HTTPIP|HTTPPort|HTTPAddr|Name|SSHPublicKey)\s*\}\}")
_PACKER_MAP = {
    "HTTPIP": "{{ build.http_ip }}",
    "HTTPPort": "{{ build.http_port }}",
    "HTTPAddr": "{{ build.http_ip }}:{{ build.http_port }}",
    "Name": "{{ build.name }}",
    "SSHPublicKey": "{{ build.ssh_public_key }}",
}
_GO_TIME = re.compile(r"2006|01|02|15|04|05|Jan|Mon|MST|-0700")
_GO_TO_STRFTIME = {"2006": "%Y", "01": "%m", "02": "%d", "15": "%H", "04": "%M", "05": "%S",
                   "Jan": "%b", "Mon": "%a", "MST": "UTC", "-0700": "+0000"}


def has_markup(text: str) -> bool:
    return "{{" in text or "{%" in text or "{##" in text


def packer_compat(text: str) -> str:
    """Packer's `{{ .HTTPIP }}`-style placeholders in boot commands, as baker's `build.*`."""
    return _PACKER.sub(lambda m: _PACKER_MAP[m.group(1)], text) if "{{" in text else text


class UndefinedRef(jinja2.UndefinedError):
    """An undefined name, carrying what was looked up and where, so the error can name it."""

    def __init__(self, message: str, name: Any, obj: Any) -> None:
        super().__init__(message)
        self.name = name
        self.obj = obj


class _Strict(jinja2.StrictUndefined):
    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None,
                 exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError) -> None:
        super().__init__(hint, obj, name, exc=lambda msg: UndefinedRef(msg, name, obj))  # type: ignore[arg-type]


class Namespace:
    """`var.x` / `env.HOME` / `build.http_port`: attribute access that never exposes dict methods."""

    __slots__ = ("_ns_data", "_ns_kind")

    def __init__(self, data: Mapping[str, Any], kind: str) -> None:
        object.__setattr__(self, "_ns_data", data)
        object.__setattr__(self, "_ns_kind", kind)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._ns_data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._ns_data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._ns_data

    def __iter__(self) -> Iterator[str]:
        return iter(self._ns_data)

    def __len__(self) -> int:
        return len(self._ns_data)


class _AnyBuild:
    """Stands in for `build` when late fields are checked at load time: every attribute exists."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return jinja2.ChainableUndefined(name=name)

    def __getitem__(self, name: str) -> Any:
        return jinja2.ChainableUndefined(name=name)


class RenderError(Exception):
    """Why a string could not be rendered; the caller adds the mark and the key path.

    `quiet`: the cause (a broken local) is already reported where it is defined; add nothing."""

    def __init__(self, message: str, hint: str | None = None, *, quiet: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.quiet = quiet


class _HelperError(Exception):
    pass


class HelperError(_HelperError):
    """Raised by a value provider (e.g. locals) to fail a render with this message."""


class AlreadyReported(Exception):
    """A value this render needs failed and was reported at its own position."""


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return value


def _b64decode(text: str) -> str:
    return base64.b64decode(text).decode()


def _regex_replace(text: str, pattern: str, repl: str) -> str:
    return re.sub(pattern, repl, text)


ENV = jinja2.Environment(
    undefined=_Strict,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_finalize,
    comment_start_string="{##",
    comment_end_string="##}",
)
ENV.filters.update(
    urlquote=lambda s: urllib.parse.quote(str(s), safe=""),
    shquote=lambda s: shlex.quote(str(s)),
    b64encode=lambda s: base64.b64encode(str(s).encode()).decode(),
    b64decode=_b64decode,
    sha256=lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
    sha512=lambda s: hashlib.sha512(str(s).encode()).hexdigest(),
    to_json=lambda v: json.dumps(v),
    to_yaml=lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=False),
    basename=lambda s: os.path.basename(str(s)),
    dirname=lambda s: os.path.dirname(str(s)),
    regex_replace=_regex_replace,
)


def native(value: Any) -> Any:
    """A rendered value as plain data (lists, dicts, scalars); anything else becomes its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [native(v) for v in value]
    if isinstance(value, dict):
        return {str(k): native(v) for k, v in value.items()}
    if isinstance(value, Namespace):
        return {k: native(value[k]) for k in value}
    return str(value)


def text_of(value: Any) -> str:
    """The text a native result stands for in a string field (None → "", True → "true")."""
    out = _finalize(value)
    return out if isinstance(out, str) else str(out)


#: base images the project builds itself (scripts/build-base-image); name → file in the base dir
BUILTIN_BASES = {"debian-12": "debian-12-base.qcow2"}


def _base_image(name: str = "debian-12") -> str:
    """The project's own base image, as `make base-image` left it in baker's cache."""
    from baker.paths import base_images_dir

    if name not in BUILTIN_BASES:
        known = ", ".join(BUILTIN_BASES)
        raise _HelperError(f"base_image('{name}'): no such built-in base image"
                           f"{did_you_mean(name, BUILTIN_BASES)} (built-in: {known})")
    path = base_images_dir() / BUILTIN_BASES[name]
    if not path.exists():
        raise _HelperError(f"base_image('{name}'): not built yet ({path} is missing); run `make base-image` "
                           f"(scripts/build-base-image), or pass -var base_image=URL")
    return str(path.resolve())


def _base_image_checksum(name: str = "debian-12") -> str:
    """`file:` the sha256sum line the base image build writes beside the image."""
    return f"file:{_base_image(name)}.sha256"


class Renderer:
    """The load-time context (and, for late fields, `build`); one per template load."""

    def __init__(self, *, values: Mapping[str, Any], environ: Mapping[str, str], name: str | None,
                 template_dir: Path, now: datetime, build: Mapping[str, Any] | None = None,
                 locals_: Mapping[str, Any] | None = None) -> None:
        self.var = Namespace(values, "var")
        self.local = Namespace(locals_ if locals_ is not None else {}, "local")
        self.env = Namespace(environ, "env")
        self.build: Any = Namespace(build, "build") if build is not None else None
        self.template_dir = template_dir
        self.now = now
        self.context: dict[str, Any] = {
            "var": self.var,
            "local": self.local,
            "env": self.env,
            "template_dir": str(template_dir),
            "cwd": os.getcwd(),
            "timestamp": lambda: now.strftime("%Y%m%d%H%M%S"),
            "isotime": self._isotime,
            "uuid": lambda: str(_uuid.uuid4()),
            "env_or": lambda key, default="": environ.get(key, default),
            "file": self._file,
            "base_image": _base_image,
            "base_image_checksum": _base_image_checksum,
        }
        if name is not None:
            self.context["name"] = name
        if self.build is not None:
            self.context["build"] = self.build

    def set_name(self, name: str) -> None:
        self.context["name"] = name

    def _isotime(self, fmt: str | None = None) -> str:
        if not fmt:
            return self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if "2006" in fmt:  # a Go layout, as Packer's isotime takes
            fmt = _GO_TIME.sub(lambda m: _GO_TO_STRFTIME[m.group(0)], fmt)
        return self.now.strftime(fmt)

    def _file(self, relpath: str) -> str:
        p = Path(os.path.expanduser(str(relpath)))
        p = p if p.is_absolute() else self.template_dir / p
        try:
            return p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or e
            raise _HelperError(f"file('{relpath}'): cannot read {p}: {reason}") from None

    def render(self, text: str, *, native_result: bool = True) -> Any:
        """Render one string; a lone `{{ expr }}` keeps its native type unless `native_result` is off."""
        if not has_markup(text):
            return text
        m = _WHOLE.match(text)
        expr = m.group("expr") if m else None
        try:
            if native_result and expr is not None and not any(t in expr for t in ("{{", "}}", "{%", "%}")):
                result = ENV.compile_expression(expr, undefined_to_none=False)(**self.context)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # raises UndefinedRef with the name
                return native(result)
            return ENV.from_string(text).render(self.context)
        except Exception as e:
            raise self._explain(e, text) from None

    def check_late(self, text: str) -> None:
        """Load-time check of a late field: syntax, and references to undeclared `var.*` or names."""
        if not has_markup(text):
            return
        try:
            tmpl = ENV.from_string(text)
        except Exception as e:
            raise self._explain(e, text) from None
        context = dict(self.context, build=_AnyBuild())
        try:
            tmpl.render(context)
        except UndefinedRef as e:
            if e.obj is missing or e.obj is self.var or e.obj is self.env or e.obj is self.local:
                raise self._explain(e, text) from None
        except Exception:
            pass  # depends on build.* values; checked again when rendered for real

    def _explain(self, e: BaseException, text: str) -> RenderError:
        multi = "\n" in text.rstrip("\n")
        if isinstance(e, jinja2.TemplateSyntaxError):
            where = f" (line {e.lineno} of the string)" if multi and e.lineno else ""
            return RenderError(f"template syntax error: {e.message}{where}",
                               "to write {{ literally, use {{ '{{' }} or wrap the text in "
                               "{% raw %}...{% endraw %}")
        if isinstance(e, UndefinedRef):
            return self._undefined(e)
        if isinstance(e, AlreadyReported):
            return RenderError("", quiet=True)
        if isinstance(e, _HelperError):
            return RenderError(str(e))
        if isinstance(e, jinja2.UndefinedError):
            return RenderError(f"undefined value: {e.message}")
        return RenderError(f"cannot render: {type(e).__name__}: {e}")

    def _undefined(self, e: UndefinedRef) -> RenderError:
        name = str(e.name)
        if e.obj is self.var:
            return RenderError(f"undefined variable 'var.{name}'{did_you_mean(name, self.var)}",
                               "declare it under `variables:` in the template")
        if e.obj is self.local:
            return RenderError(f"undefined local 'local.{name}'{did_you_mean(name, self.local)}",
                               "define it under `locals:` in the template")
        if e.obj is self.env:
            return RenderError(f"environment variable '{name}' is not set",
                               f"set it, or write env_or('{name}', 'fallback') for a default")
        if self.build is not None and e.obj is self.build:
            avail = ", ".join(sorted(self.build)) or "none"
            return RenderError(f"'build.{name}' is not available{did_you_mean(name, self.build)}",
                               f"build values here: {avail}")
        if e.obj is missing:
            hint = None
            if name in self.var:
                hint = f"variables are written with their prefix: {{{{ var.{name} }}}}"
            elif name in self.local:
                hint = f"locals are written with their prefix: {{{{ local.{name} }}}}"
            elif name == "name" and "name" not in self.context:
                hint = "locals are computed before the template's name: use a variable or a literal"
            elif name == "build":
                hint = ("build.* values exist only in late fields "
                        "(boot_command, http_content, cd_content, append)")
            return RenderError(f"'{name}' is undefined{did_you_mean(name, self.context)}", hint)
        return RenderError(f"undefined value: {e.message}")
