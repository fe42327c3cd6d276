"""The template reference generated from the code: help text on every key, the shipped JSON Schema
in step with the model, real templates valid against it, and `baker docs`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from baker.errors import TemplateError, TemplateErrors
from baker.reference import DOCS, PACKAGED, REGENERATE, schema_text
from baker.reference.schema import template_schema
from baker.reference.walk import sections
from baker.template import load_template
from baker.template.loader import USER_KEYS
from tests.helpers.paths import ROOT

SCHEMA = template_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def errors(doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_every_key_and_section_has_help_text():
    missing = [f"{path or 'template'}.{k.name}" for path, s in sections().items() for k in s.keys
               if not k.help.strip()]
    assert not missing, f"keys without help text (add help= / help_field text): {missing}"
    undocumented = [path or "template" for path, s in sections().items() if not s.doc.strip()]
    assert not undocumented, f"sections without a docstring: {undocumented}"


def test_every_exporter_option_is_in_the_reference():
    from baker.export import EXPORTERS

    index = sections()
    for type_name, exporter in EXPORTERS.items():
        keys = {k.name for k in index[f"exports.{type_name}"].keys}
        assert keys == {"type"} | set(exporter.Options.__dataclass_fields__)


def test_the_shipped_schema_is_what_the_code_generates():
    fresh = schema_text()
    for copy in (PACKAGED, DOCS):
        assert copy.is_file(), f"{copy} is missing: run `{REGENERATE}`"
        assert copy.read_text() == fresh, f"{copy} is out of date: run `{REGENERATE}`"


def test_check_mode_agrees():
    r = subprocess.run([sys.executable, "-m", "baker.reference", "--check"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_schema_is_valid_draft_2020_12_and_covers_the_top_level_keys():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(SCHEMA["properties"]) == USER_KEYS
    assert SCHEMA["required"] == ["name"]
    assert "duration" in SCHEMA["$defs"]["communicator"]["properties"]["ssh_timeout"]["description"]


def test_tagged_unions_are_one_of_with_a_const_type():
    items = SCHEMA["properties"]["provisioners"]["items"]["oneOf"]
    assert [i["$ref"] for i in items] == ["#/$defs/provisioners.shell", "#/$defs/provisioners.file",
                                          "#/$defs/provisioners.shell-local"]
    shell = SCHEMA["$defs"]["provisioners.shell"]
    assert shell["properties"]["type"]["const"] == "shell" and "type" in shell["required"]
    assert "environment_vars" in shell["properties"]  # the Packer alias
    post = [i["$ref"] for i in SCHEMA["properties"]["post"]["items"]["oneOf"]]
    assert post == ["#/$defs/provisioners.shell-local", "#/$defs/post.checksum"]  # one definition, reused
    vmdk = SCHEMA["$defs"]["exports.vmdk"]["properties"]
    assert vmdk["subformat"]["anyOf"][0]["enum"] == ["streamOptimized", "monolithicSparse"]
    assert vmdk["hwversion"]["default"] == 13 and vmdk["hwversion"]["description"]


@pytest.mark.parametrize("template", sorted((ROOT / "templates").glob("*.yaml")), ids=lambda p: p.name)
def test_real_templates_are_valid(template: Path):
    assert errors(yaml.safe_load(template.read_text())) == []


def test_expressions_and_packer_spellings_are_valid():
    doc = {"name": "x", "source": {"cloud_image": {"url": "base.qcow2", "iso_checksum": "none"}},
           "machine": {"cpus": "{{ var.cpus }}", "memory": "2048", "secure_boot": "{{ var.sb }}",
                       "firmware": "{{ var.fw }}", "qemuargs": [["-device", "virtio-rng-pci"]]},
           "provisioners": [{"type": "shell", "inline": "echo one command",
                             "environment_vars": ["A=1", "B=2"], "valid_exit_codes": [0, "{{ var.ok }}"]}],
           "shutdown": {"shutdown_command": "poweroff"}, "exports": None, "x-common": {"any": "thing"}}
    assert errors(doc) == []


@pytest.mark.parametrize(("doc", "where"), [
    ({"source": {}}, ""),  # no name
    ({"name": "x", "machin": {}}, ""),
    ({"name": "x", "machine": {"cpus": "lots"}}, "machine.cpus"),
    ({"name": "x", "machine": {"firmware": "efi"}}, "machine.firmware"),
    ({"name": "x", "source": {"cloud_image": {"checksum": "none"}}}, "source.cloud_image"),  # no url
    ({"name": "x", "provisioners": [{"inline": ["true"]}]}, "provisioners.0"),
    ({"name": "x", "provisioners": [{"type": "shel", "inline": ["true"]}]}, "provisioners.0"),
    ({"name": "x", "provisioners": [{"type": "file", "inline": ["true"]}]}, "provisioners.0"),
    ({"name": "x", "exports": []}, "exports"),
    ({"name": "x", "exports": [{"type": "vmdkk"}]}, "exports.0"),
    ({"name": "x", "exports": [{"type": "vmdk", "subformat": "flat"}]}, "exports.0"),
    ({"name": "x", "post": [{"type": "checksum", "types": ["crc32"]}]}, "post.0"),
    ({"name": "x", "variables": {"9lives": 1}}, "variables"),
])
def test_bad_templates_are_invalid(doc: dict, where: str):
    problems = errors(doc)  # reported at `where` or at the anyOf (section or null) that holds it
    assert problems and any(where.startswith(p.split(":")[0]) for p in problems), problems


@pytest.mark.parametrize("snippet", [
    "machine: {cpus: lots}",
    "machine: {firmware: efi}",
    "exports: [{type: vmdk, subformat: flat}]",
    "provisioners: [{type: shel, inline: [true]}]",
    "communicator: {ssh_port: '{{ 2000 + 22 }}'}",
    "provisioners: [{type: shell, environment_vars: ['A=1'], inline: 'true'}]",
    "shutdown: {shutdown_command: poweroff, timeout: 2m}",
    "exports:",
])
def test_schema_and_loader_agree(tmp_path: Path, snippet: str):
    (tmp_path / "base.qcow2").write_bytes(b"")
    text = f"name: x\nsource: {{cloud_image: {{url: base.qcow2, checksum: none}}}}\n{snippet}\n"
    (tmp_path / "t.yaml").write_text(text)
    try:
        load_template(tmp_path / "t.yaml", environ={})
        loads = True
    except (TemplateError, TemplateErrors):
        loads = False
    assert (errors(yaml.safe_load(text)) == []) == loads


def baker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baker", *args], capture_output=True, text=True, cwd=ROOT)


def test_docs_lists_the_sections():
    r = baker("docs")
    assert r.returncode == 0, r.stderr
    for name in ("machine", "exports.vmdk", "provisioners.shell", "post.checksum", "source.cloud_image"):
        assert f"  {name} " in r.stdout


def test_docs_shows_type_default_allowed_values_aliases_and_help():
    out = baker("docs", "machine").stdout
    assert "firmware: one of bios | uefi\n    default: bios\n" in out
    assert "disk_size: size\n    default: 8G" in out
    out = baker("docs", "exports.vmdk").stdout
    assert "hwversion: integer\n    default: 13\n    ddb.virtualHWVersion" in out  # the exporter's own help
    out = baker("docs", "provisioners.shell").stdout
    assert "environment: mapping of string\n    default: none\n    aliases: environment_vars" in out
    out = baker("docs", "exports").stdout
    assert "vhdx" in out and "baker docs exports.vhdx" in out


def test_every_section_renders():
    from baker.reference.text import render_section

    for path in sections():
        assert render_section(path or "template").strip()


def test_docs_unknown_section_suggests_and_exits_2():
    r = baker("docs", "exports.vmdkk")
    assert r.returncode == 2
    assert "unknown section 'exports.vmdkk' (did you mean 'exports.vmdk'?)" in r.stderr
    assert "Traceback" not in r.stderr
    r = baker("docs", "shell-local")
    assert r.returncode == 2
    assert "(did you mean 'provisioners.shell-local' or 'post.shell-local'?)" in r.stderr


def test_schema_json_is_stable_text():
    assert json.loads(schema_text()) == SCHEMA


def test_docs_has_a_builds_section_and_the_schema_uses_its_text():
    from baker.template.builds import OVERRIDABLE

    assert "  builds " in baker("docs").stdout
    assert "builds: list of mapping (section)\n" in baker("docs", "template").stdout
    r = baker("docs", "builds")
    assert r.returncode == 0, r.stderr
    assert "<template name>-<build name>" in " ".join(r.stdout.split())
    assert "name: string\n    default: required\n" in r.stdout
    assert "machine: as the top-level machine\n    default: the template's\n" in r.stdout
    assert "    see: baker docs machine\n" in r.stdout
    items = SCHEMA["properties"]["builds"]["items"]
    assert set(items["properties"]) == {"name", *OVERRIDABLE}
    assert {k.name: k.help for k in sections()["builds"].keys} == \
        {k: v["description"] for k, v in items["properties"].items()}
    assert "builds" not in SCHEMA["$defs"]
