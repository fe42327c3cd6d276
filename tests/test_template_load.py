"""YAML loading, the generic converter, exports, and the JSON view: errors point at file:line:col."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from baker.errors import TemplateError, TemplateErrors
from baker.template import load_template, template_to_dict
from baker.template.model import FileProvisioner, ShellLocalProvisioner, ShellProvisioner


@dataclass
class Qcow2Options:
    compress: bool = False
    compression_level: int = 6


@dataclass
class OvaOptions:
    vm_name: str | None = None
    disk_controller: Literal["scsi", "ide", "sata"] = "scsi"


@dataclass
class VhdOptions:
    azure: bool = False


@dataclass
class VagrantOptions:
    provider: Literal["libvirt", "virtualbox"] = "libvirt"
    vagrantfile: str | None = field(default=None, metadata={"path": True})


def _exporter(options: type) -> type:
    return type(options.__name__.replace("Options", "Exporter"), (), {"Options": options})


@pytest.fixture(autouse=True)
def fake_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """`baker.export` is written concurrently; the loader imports it lazily, so a stand-in works."""
    mod = types.ModuleType("baker.export")
    mod.EXPORTERS = {"qcow2": _exporter(Qcow2Options), "ova": _exporter(OvaOptions),  # type: ignore[attr-defined]
                     "vhd": _exporter(VhdOptions), "vagrant": _exporter(VagrantOptions)}
    monkeypatch.setitem(sys.modules, "baker.export", mod)


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    """Write a template; text after BASE is dedented on its own so it can be indented in the test."""
    if text.startswith(BASE):
        text = BASE.lstrip("\n") + textwrap.dedent(text[len(BASE):]).lstrip("\n")
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def fails(tmp_path: Path, text: str, **kw) -> str:
    with pytest.raises((TemplateError, TemplateErrors)) as exc:
        load_template(write(tmp_path, text), **kw)
    return str(exc.value)


def at(tmp_path: Path, line: int, col: int, keypath: str) -> str:
    return f"{tmp_path / 't.yaml'}:{line}:{col}: {keypath}: "


BASE = """
name: t
source:
  cloud_image:
    url: https://example.org/base.qcow2
"""

NGINX = """
# the shape of templates/debian-12-nginx.yaml
name: debian-12-nginx
description: Debian 12 with nginx, for the web tier

variables:
  base_image:
    default: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
  base_checksum:
    default: file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS
  nginx_port:
    type: int
    default: 80
  api_token:
    sensitive: true
    required: false

source:
  cloud_image:
    url: "{{ var.base_image }}"
    checksum: "{{ var.base_checksum }}"

machine:
  accelerator: auto
  cpus: 2
  memory: 2048
  disk_size: 8G
  firmware: bios
  qemuargs: []

communicator:
  ssh_timeout: 10m

provisioners:
  - type: shell
    script: provisioners/wait-cloud-init.sh
  - type: shell
    environment: {DEBIAN_FRONTEND: noninteractive, PORT: "{{ var.nginx_port }}"}
    inline:
      - apt-get update
      - apt-get install -y nginx
  - type: file
    source: files/nginx-default.conf
    destination: /etc/nginx/sites-available/default
  - type: shell
    inline: ["systemctl enable nginx"]

exports:
  - type: qcow2
    compress: true
  - type: ova
  - type: vhd
    azure: true
  - type: vagrant
    provider: libvirt
"""


def nginx_tree(tmp_path: Path) -> Path:
    (tmp_path / "provisioners").mkdir()
    (tmp_path / "provisioners" / "wait-cloud-init.sh").write_text("cloud-init status --wait\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "nginx-default.conf").write_text("server {}\n")
    return write(tmp_path, NGINX)


# -- the real example ------------------------------------------------------------------------------

def test_example_template_loads(tmp_path: Path) -> None:
    t = load_template(nginx_tree(tmp_path), cli_vars={"nginx_port": "8080"}, environ={})
    assert t.name == "debian-12-nginx"
    assert t.source.cloud_image is not None and t.source.iso is None
    assert t.source.cloud_image.url.endswith("genericcloud-amd64.qcow2")
    assert t.source.cloud_image.checksum.startswith("file:https://")
    assert t.values["nginx_port"] == 8080
    assert t.machine.disk_size == "8G" and t.communicator.ssh_timeout == "10m"
    assert [type(p) for p in t.provisioners] == [ShellProvisioner, ShellProvisioner, FileProvisioner,
                                                 ShellProvisioner]
    assert t.provisioners[0].script == str(tmp_path / "provisioners" / "wait-cloud-init.sh")
    assert t.provisioners[1].environment == {"DEBIAN_FRONTEND": "noninteractive", "PORT": "8080"}
    assert t.provisioners[2].source == str(tmp_path / "files" / "nginx-default.conf")
    assert [e.type for e in t.exports] == ["qcow2", "ova", "vhd", "vagrant"]
    assert t.exports[0].options == Qcow2Options(compress=True)
    assert t.exports[2].options.azure is True
    assert t.exports[0].mark is not None and (t.exports[0].mark.line, t.exports[0].mark.col) == (48, 5)
    assert t.path == tmp_path / "t.yaml" and len(t.sha256) == 64
    assert t.marks["provisioners[2].destination"].line == 43
    assert t.marks["source.cloud_image.url"].line == 19


def test_template_to_dict_is_json(tmp_path: Path) -> None:
    t = load_template(nginx_tree(tmp_path), environ={})
    d = template_to_dict(t)
    json.dumps(d)
    assert d["path"] == str(tmp_path / "t.yaml")
    assert d["exports"][0] == {"type": "qcow2", "options": {"compress": True, "compression_level": 6}}
    assert d["provisioners"][2]["type"] == "file"
    assert "marks" not in d


def test_default_export_is_qcow2(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE))
    assert len(t.exports) == 1 and t.exports[0].type == "qcow2"
    assert t.exports[0].options == Qcow2Options()


def test_real_export_registry_when_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "baker.export")
    try:
        import baker.export  # noqa: F401
    except Exception:
        pytest.skip("baker.export is not importable yet")
    t = load_template(write(tmp_path, BASE))
    assert t.exports[0].type == "qcow2"


# -- YAML ---------------------------------------------------------------------------------------------

def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\nsource:\n  cloud_image: [a, b\n")
    assert msg.startswith(f"{tmp_path / 't.yaml'}:4:1: YAML syntax error: ")
    assert "expected ',' or ']'" in msg


def test_yaml_bad_indentation(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\n  source: x\n")
    assert msg.startswith(f"{tmp_path / 't.yaml'}:2:9: YAML syntax error: mapping values are not allowed")


def test_tab_indentation(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\nsource:\n\tcloud_image: x\n")
    assert msg.startswith(f"{tmp_path / 't.yaml'}:3:1: YAML syntax error: ")


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_bytes(b"name: t\ndescription: caf\xe9\n")
    with pytest.raises(TemplateError) as exc:
        load_template(p)
    assert str(exc.value).startswith(f"{p}:2:17: not valid UTF-8 text (byte 0xe9)")


def test_control_character(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_bytes(b"name: t\x07\n")
    with pytest.raises(TemplateError) as exc:
        load_template(p)
    assert str(exc.value).startswith(f"{p}:1:8: YAML syntax error: ")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert fails(tmp_path, text) == f"{tmp_path / 't.yaml'}:1:1: the template is empty\n" \
        "  hint: a template is a mapping with at least name: and source:"


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    msg = fails(tmp_path, "- name: t\n")
    assert msg.startswith(f"{tmp_path / 't.yaml'}:1:1: the template must be a mapping")
    assert "got a list" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="file not found"):
        load_template(tmp_path / "nope.yaml")


def test_several_documents(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "---\nname: u\n")
    assert f"{tmp_path / 't.yaml'}:5:1: YAML syntax error: " in msg and "single document" in msg


def test_duplicate_key(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  cpus: 2\n  cpus: 4\n")
    assert msg.startswith(at(tmp_path, 7, 3, "machine.cpus") + "duplicate key 'cpus' (first given on line 6)")


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "name: u\n")
    assert msg.startswith(at(tmp_path, 5, 1, "name") + "duplicate key 'name'")


def test_merge_keys_and_extension_keys(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + """
        x-common: &common
          sudo: false
          valid_exit_codes: [0, 2]
        provisioners:
          - <<: *common
            type: shell
            inline: [a]
          - <<: *common
            type: shell
            sudo: true
            inline: [b]
        """))
    p0, p1 = t.provisioners
    assert isinstance(p0, ShellProvisioner) and isinstance(p1, ShellProvisioner)
    assert (p0.sudo, p0.valid_exit_codes, p1.sudo) == (False, [0, 2], True)


def test_unquoted_expression_hint(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  cpus: {{ var.cpus }}\n")
    assert msg.startswith(at(tmp_path, 6, 9, "machine.cpus") + "expected an integer, got a mapping")
    assert "must be quoted" in msg


# -- the converter -----------------------------------------------------------------------------------

def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + """
        provisioners:
          - type: shell
            inline: [a]
          - type: shell
            inline: [b]
          - type: shell
            inlne: [c]
        """)
    assert at(tmp_path, 11, 5, "provisioners[2].inlne") + \
        "unknown key 'inlne' (did you mean 'inline'?)" in msg
    assert "hint: valid keys for 'provisioners[2]': type, name, inline, script" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisoners: []\n")
    assert msg.startswith(at(tmp_path, 5, 1, "provisoners") + "unknown key 'provisoners' "
                          "(did you mean 'provisioners'?)")
    assert "hint: valid keys for the top level: name, description, version, include, variables, locals, " \
        "source" in msg


def test_internal_fields_are_not_keys(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "sha256: abc\n")
    assert msg.startswith(at(tmp_path, 5, 1, "sha256") + "unknown key 'sha256'")


def test_literal_lists_allowed_values(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  accelerator: kvmm\n")
    assert msg.startswith(at(tmp_path, 6, 16, "machine.accelerator") +
                          "'kvmm' is not one of: auto, kvm, tcg (did you mean 'kvm'?)")


def test_wrong_scalar_types(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  cpus: many\n  secure_boot: maybe\n  memory: [1]\n")
    lines = msg.splitlines()
    assert lines[0] == at(tmp_path, 6, 9, "machine.cpus") + "expected an integer, got 'many'"
    assert lines[1] == at(tmp_path, 7, 16, "machine.secure_boot") + "expected true or false, got 'maybe'"
    assert lines[2] == at(tmp_path, 8, 11, "machine.memory") + "expected an integer, got a list"


def test_string_values_coerce(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + """
        machine:
          cpus: "4"
          secure_boot: "no"
          machine_type: 1.10
        """))
    assert t.machine.cpus == 4 and t.machine.secure_boot is False and t.machine.machine_type == "1.10"


def test_unknown_provisioner_type(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shel\n    inline: [a]\n")
    assert msg.startswith(at(tmp_path, 6, 11, "provisioners[0].type") +
                          "unknown type 'shel' (did you mean 'shell'?)")
    assert "hint: types: shell, file, shell-local" in msg


def test_provisioner_without_type(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - inline: [a]\n")
    assert msg.startswith(at(tmp_path, 6, 5, "provisioners[0].type") + "missing required key 'type'")


def test_missing_required_dataclass_key(tmp_path: Path) -> None:
    msg = fails(tmp_path, "name: t\nsource:\n  cloud_image:\n    checksum: none\n")
    assert msg == at(tmp_path, 4, 5, "source.cloud_image.url") + "missing required key 'url'"


def test_environment_vars_alias(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + """
        provisioners:
          - type: shell
            environment_vars: ["A=1", "B=x=y"]
            inline: [env]
        """))
    assert t.provisioners[0].environment == {"A": "1", "B": "x=y"}


def test_alias_and_name_together(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE.replace("url:", "checksum: none\n    iso_checksum: none\n    url:"))
    assert msg.startswith(at(tmp_path, 5, 5, "source.cloud_image.iso_checksum") +
                          "'iso_checksum' and 'checksum' set the same option; keep one")


def test_environment_vars_needs_equals(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shell\n    environment_vars: [A]\n"
                                 "    inline: [a]\n")
    assert msg.startswith(at(tmp_path, 7, 23, "provisioners[0].environment_vars[0]") +
                          "expected KEY=VALUE, got 'A'")


def test_shutdown_aliases(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + "shutdown:\n  shutdown_command: poweroff\n"
                                             "  shutdown_timeout: 90s\n"))
    assert (t.shutdown.command, t.shutdown.timeout) == ("poweroff", "90s")


def test_qemuargs_flat_and_nested(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + """
        machine:
          qemuargs:
            - ["-device", "virtio-rng-pci"]
            - -nographic
            - [-smp, 2]
        """))
    assert t.machine.qemuargs == ["-device", "virtio-rng-pci", "-nographic", "-smp", "2"]


def test_qemuargs_nested_too_deep(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "machine:\n  qemuargs: [[[-a]]]\n")
    assert msg.startswith(at(tmp_path, 6, 15, "machine.qemuargs[0][0]") + "expected a string, got a list")


def test_duration_and_size(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "communicator:\n  ssh_timeout: 10 minutes\nmachine:\n  disk_size: 8 gigs\n")
    lines = msg.splitlines()
    assert lines[0] == at(tmp_path, 6, 16, "communicator.ssh_timeout") + \
        "invalid duration: '10 minutes' is not a duration; write it like 90s, 10m or 1h30m"
    assert lines[1] == "  hint: examples: 90s, 10m, 1h30m, 500ms"
    assert lines[2] == at(tmp_path, 8, 14, "machine.disk_size") + \
        "invalid size: '8 gigs' is not a size; write it like 8G, 512M or 10GiB"


def test_duration_as_number(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + "communicator:\n  ssh_timeout: 600\n"))
    assert t.communicator.ssh_timeout == "600"


def test_single_string_for_a_list(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("true\n")
    t = load_template(write(tmp_path, BASE + "provisioners:\n  - type: shell\n    scripts: a.sh\n"
                                             "    valid_exit_codes: 0\n"))
    assert t.provisioners[0].scripts == [str(tmp_path / "a.sh")]
    assert t.provisioners[0].valid_exit_codes == [0]


def test_empty_value_keeps_default(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + "description:\nmachine:\n  cpus:\n"))
    assert t.description == "" and t.machine.cpus == 2


def test_cloud_init_user_data_is_free_form(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE.strip() + "\n  cloud_init:\n    user_data:\n"
                                             '      packages: [nginx, "{{ name }}"]\n'
                                             '      write_files: [{path: /etc/x, content: "a: 1", '
                                             'permissions: "0644"}]\n'
                                             "      on: yes\n"))
    assert t.source.cloud_init.user_data == {
        "packages": ["nginx", "t"],
        "write_files": [{"path": "/etc/x", "content": "a: 1", "permissions": "0644"}],
        "on": True,
    }


def test_unsupported_tag(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "description: !Ref foo\n")
    assert msg.startswith(at(tmp_path, 5, 14, "description") + "unsupported YAML tag '!Ref'")


def test_many_errors_in_one_pass(tmp_path: Path) -> None:
    with pytest.raises(TemplateErrors) as exc:
        load_template(write(tmp_path, BASE + """
            machine:
              cpus: x
              memroy: 1
            communicator:
              ssh_port: http
            provisioners:
              - type: shel
            exports:
              - type: qcow
            """))
    paths = [e.path for e in exc.value.errors]
    assert paths == ["machine.cpus", "machine.memroy", "communicator.ssh_port", "provisioners[0].type",
                     "exports[0].type"]
    assert [e.mark.line for e in exc.value.errors if e.mark] == [6, 7, 9, 11, 13]


# -- paths ----------------------------------------------------------------------------------------------

def test_missing_script(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shell\n    script: scripts/nope.sh\n")
    assert msg.startswith(at(tmp_path, 7, 13, "provisioners[0].script") +
                          f"file not found: 'scripts/nope.sh' (looked for {tmp_path}/scripts/nope.sh)")
    assert f"hint: paths are relative to the template's folder {tmp_path}" in msg


def test_missing_one_of_scripts(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("")
    msg = fails(tmp_path, BASE + "provisioners:\n  - type: shell-local\n    scripts:\n      - a.sh\n"
                                 "      - b.sh\n")
    assert msg.startswith(at(tmp_path, 9, 9, "provisioners[0].scripts[1]") + "file not found: 'b.sh'")


def test_missing_file_source_and_http_directory(tmp_path: Path) -> None:
    with pytest.raises(TemplateErrors) as exc:
        load_template(write(tmp_path, BASE + """
              http_directory: http
            provisioners:
              - type: file
                source: files/x.conf
                destination: /etc/x.conf
            """))
    assert [(e.path, e.mark.line, e.mark.col) for e in exc.value.errors if e.mark] == [
        ("source.http_directory", 5, 19), ("provisioners[0].source", 8, 13)]


def test_cd_files_globs(tmp_path: Path) -> None:
    (tmp_path / "cd").mkdir()
    (tmp_path / "cd" / "ks.cfg").write_text("")
    t = load_template(write(tmp_path, BASE.strip() + "\n  cd_files: [cd/*.cfg]\n"))
    assert t.source.cd_files == [str(tmp_path / "cd" / "*.cfg")]
    msg = fails(tmp_path, BASE.strip() + "\n  cd_files: [cd/*.cfg, cd/*.xml]\n")
    assert msg.startswith(at(tmp_path, 5, 24, "source.cd_files[1]") + "no file matches 'cd/*.xml'")


def test_download_source_is_a_guest_path(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + """
        provisioners:
          - type: file
            direction: download
            source: /var/log/cloud-init.log
            destination: logs/
        """))
    assert t.provisioners[0].source == "/var/log/cloud-init.log"


def test_absolute_and_home_paths(tmp_path: Path) -> None:
    script = tmp_path / "abs.sh"
    script.write_text("")
    t = load_template(write(tmp_path, BASE + f"provisioners:\n  - type: shell\n    script: {script}\n"))
    assert t.provisioners[0].script == str(script)


def test_shell_local_is_a_provisioner(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + "provisioners:\n  - type: shell-local\n    inline: [date]\n"))
    assert isinstance(t.provisioners[0], ShellLocalProvisioner)


# -- exports ----------------------------------------------------------------------------------------------

def test_export_unknown_option(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "exports:\n  - type: qcow2\n    compres: true\n")
    assert msg.startswith(at(tmp_path, 7, 5, "exports[0].compres") +
                          "unknown key 'compres' (did you mean 'compress'?)")


def test_export_unknown_type(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "exports:\n  - type: vhdx\n")
    assert msg.startswith(at(tmp_path, 6, 11, "exports[0].type") + "unknown export type 'vhdx' "
                          "(did you mean 'vhd'?)")
    assert "hint: types: ova, qcow2, vagrant, vhd" in msg


def test_export_option_types(tmp_path: Path) -> None:
    msg = fails(tmp_path, BASE + "exports:\n  - type: ova\n    disk_controller: nvme\n")
    assert msg.startswith(at(tmp_path, 7, 22, "exports[0].disk_controller") +
                          "'nvme' is not one of: scsi, ide, sata")


def test_export_shapes(tmp_path: Path) -> None:
    assert fails(tmp_path, BASE + "exports: []\n").startswith(
        at(tmp_path, 5, 10, "exports") + "'exports' must be a non-empty list")
    assert fails(tmp_path, BASE + "exports:\n  - qcow2\n").startswith(
        at(tmp_path, 6, 5, "exports[0]") + "expected a mapping with a 'type' key, got a single value")
    assert fails(tmp_path, BASE + "exports:\n  - compress: true\n").startswith(
        at(tmp_path, 6, 5, "exports[0].type") + "missing required key 'type'")


def test_export_path_option_resolved(tmp_path: Path) -> None:
    t = load_template(write(tmp_path, BASE + "exports:\n  - type: vagrant\n"
                                             "    vagrantfile: Vagrantfile.in\n"))
    assert t.exports[0].options.vagrantfile == str(tmp_path / "Vagrantfile.in")


def test_exports_registry_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "baker.export", types.ModuleType("baker.export"))
    assert "cannot load the exporters (baker.export)" in fails(tmp_path, BASE)
