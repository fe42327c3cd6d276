"""Fuzz: whatever the file holds, loading raises only TemplateError/TemplateErrors (or succeeds)."""

from __future__ import annotations

import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baker.errors import TemplateError, TemplateErrors
from baker.template import load_template, template_to_dict


@dataclass
class Qcow2Options:
    compress: bool = False
    level: int = 6


@pytest.fixture(autouse=True, scope="module")
def fake_exporters() -> Any:
    mod = types.ModuleType("baker.export")
    mod.EXPORTERS = {"qcow2": type("Qcow2", (), {"Options": Qcow2Options})}  # type: ignore[attr-defined]
    saved = sys.modules.get("baker.export")
    sys.modules["baker.export"] = mod
    yield
    if saved is None:
        sys.modules.pop("baker.export", None)
    else:
        sys.modules["baker.export"] = saved


KEYS = ["name", "source", "cloud_image", "iso", "url", "iso_url", "iso_urls", "checksum", "iso_checksum",
        "machine", "cpus", "memory", "disk_size", "qemuargs", "firmware", "secure_boot", "communicator",
        "type", "ssh_timeout", "provisioners", "inline", "script", "scripts", "environment",
        "environment_vars", "source", "destination", "content", "direction", "exports", "compress",
        "variables", "default", "required", "sensitive", "boot_command", "http_content", "cd_files",
        "user_data", "cloud_init", "shutdown", "generalize", "<<", "x-any", "valid_exit_codes", "post",
        "types", "checksum_types", "include", "locals"]
TEXTS = ["shell", "file", "shell-local", "none", "qcow2", "8G", "10m", "uefi", "{{ var.x }}", "{{ name }}",
         "{{", "}}", "{% if %}", "{{ build.http_ip }}", "{{ .HTTPIP }}", "sha256:abc", "file:x", "0644",
         "{{ 1/0 }}", "{{ var.x | int }}", "${#a}", "{##", "a=b", "-device", "download", "checksum", "sha512",
         "htp://x", "file://h/x", "{{ local.x }}", "{{ local.y }}", "t.yaml", "frag.yaml"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.sampled_from(TEXTS), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=30,
)
top_level = st.dictionaries(keys, documents, max_size=8)

_DIR = Path(tempfile.mkdtemp(prefix="baker-fuzz-"))


(_DIR / "frag.yaml").write_text("machine: {cpus: 2}\nprovisioners: [{type: shell, inline: [a]}]\n")


def _load(data: bytes, **kw: Any) -> None:
    p = _DIR / "t.yaml"
    p.write_bytes(data)
    try:
        t = load_template(p, environ={}, **kw)
    except (TemplateError, TemplateErrors) as e:
        str(e)
        return
    template_to_dict(t)


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(top_level)
def test_random_structures(doc: dict) -> None:
    _load(yaml.safe_dump(doc, allow_unicode=True).encode())


@FUZZ
@given(top_level, st.dictionaries(st.sampled_from(["x", "y", "nope"]), st.text(max_size=10), max_size=3))
def test_random_structures_with_cli_vars(doc: dict, cli: dict) -> None:
    doc.setdefault("variables", {"x": {"type": "int"}, "y": {"type": "list", "default": "[1]"}})
    _load(yaml.safe_dump(doc).encode(), cli_vars=cli)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _load(data)


_YAMLISH = st.lists(st.sampled_from([*"ab:- \n\t{}[]&*!|>'\"#%@`,?<=~.\\0x", "{{", "}}", "name: t\n",
                                     "source:\n", "  cloud_image:\n", "    url: u\n", "<<: ", "&a ", "*a",
                                     "!include t.yaml", "!include frag.yaml", "include: [frag.yaml]\n",
                                     "include: t.yaml\n", "locals:\n", "  x: '{{ local.y }}'\n",
                                     "  y: '{{ local.x }}'\n"]),
                    max_size=60).map("".join)


@FUZZ
@given(_YAMLISH)
def test_random_yaml_text(text: str) -> None:
    _load(text.encode())


@FUZZ
@given(documents)
def test_random_values_under_a_valid_template(value: Any) -> None:
    base = {"name": "t", "source": {"cloud_image": {"url": "https://x/y.qcow2"}}}
    for section, key in [("machine", "cpus"), ("provisioners", None), ("source", "cloud_init"),
                         ("exports", None), ("communicator", "ssh_port"), ("post", None)]:
        doc = dict(base)
        doc[section] = value if key is None else {key: value}
        _load(yaml.safe_dump(doc).encode())


def test_pathological_yaml() -> None:
    for text in ["a: &a [*a]\n", "a: &a {b: *a}\nname: *a\n", "<<: &a {<<: *a}\n", "[" * 2000,
                 "name: t\nsource: &s {cloud_image: {url: u}, cloud_init: {user_data: {x: *s}}}\n",
                 "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "name: t\nsource: {cloud_image: {url: u}, "
                 "cloud_init: {user_data: {x: [*d, *d, *d, *d]}}}\n",
                 "a: &a [!include frag.yaml, *a]\nname: t\n", "locals: &l {a: *l}\nname: t\n",
                 "name: t\nlocals: {a: '{{ local.a }}'}\ndescription: '{{ local.a }}'\n"]:
        _load(text.encode())
