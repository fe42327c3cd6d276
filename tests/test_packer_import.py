"""`baker import`: real-world style Packer templates (tests/data/packer) → baker templates that load.

Every key of the input must end up converted, noted (known, not needed) or reported unmapped with its
line: the `accounted` test walks the input to make sure nothing is dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baker.packer_import import ImportFailed, import_packer
from baker.packer_import.expressions import convert_text
from baker.packer_import.nodes import UnreadableTemplate
from baker.packer_import.read_json import parse
from baker.template import load_template
from tests.helpers.paths import ROOT
from tests.test_cli_edges import run

DATA = ROOT / "tests" / "data" / "packer"


def imported(name: str, out_dir: Path | None = None):
    i = import_packer(DATA / name, out_dir)
    return i, yaml.safe_load(i.yaml_text)


def unmapped(i) -> list[tuple[int, str]]:
    return [(f.line, f.key) for f in i.conversion.unmapped]


def loads(tmp: Path, text: str, **cli_vars: str):
    out = tmp / "t.yaml"
    out.write_text(text)
    return load_template(out, cli_vars=cli_vars, environ={})


# --- the three templates ---------------------------------------------------------------------------

def test_cloud_image_json(tmp_path: Path):
    i, t = imported("ubuntu-cloud.json", tmp_path)
    assert t["name"] == "ubuntu-22.04" and t["description"] == "Ubuntu 22.04 base for the app tier"
    assert t["variables"]["ssh_password"] == {"sensitive": True, "default": "ubuntu"}
    assert t["source"]["cloud_image"] == {
        "url": "{{ var.cloud_image }}", "disk_mode": "overlay",
        "checksum": "file:https://cloud-images.ubuntu.com/jammy/current/SHA256SUMS"}
    assert t["machine"] == {"disk_size": "10240M", "accelerator": "kvm", "qemuargs": ["-serial", "mon:stdio"],
                            "memory": 2048, "cpus": 2}
    assert t["communicator"] == {"ssh_username": "ubuntu", "ssh_password": "{{ var.ssh_password }}",
                                 "ssh_timeout": "20m"}
    assert t["shutdown"]["command"] == "echo '{{ var.ssh_password }}' | sudo -S shutdown -P now"
    shell, file, inline = t["provisioners"]
    assert shell["sudo"] is True and "execute_command" not in shell and shell["expect_disconnect"] is True
    assert Path(tmp_path, shell["script"]).resolve() == DATA / "scripts" / "update.sh"
    assert Path(tmp_path, file["source"]).resolve() == DATA / "files" / "motd"
    assert inline["environment"] == {"DEBIAN_FRONTEND": "noninteractive",
                                     "BUILD_VERSION": "{{ var.version }}"}
    assert inline["sudo"] is False and "{{ isotime('2006-01-02') }}" in inline["inline"][1]
    assert t["exports"] == [{"type": "qcow2", "compress": True}, {"type": "vagrant", "provider": "libvirt"}]
    assert t["post"] == [{"type": "checksum", "types": ["sha512", "md5"]}]
    assert unmapped(i) == [(8, "variables.home.default"), (34, "builders[0].floppy_files")]
    notes = {f.key for f in i.conversion.notes}
    assert {"builders[0].headless", "builders[0].cd_label", "post-processors[1]"} <= notes
    (tmp_path / "t.yaml").write_text(i.yaml_text)
    loaded = load_template(tmp_path / "t.yaml", environ={})
    assert [e.type for e in loaded.exports] == ["qcow2", "vagrant"] and len(loaded.provisioners) == 3


def test_iso_with_preseed_hcl2(tmp_path: Path):
    i, t = imported("debian-preseed.pkr.hcl", tmp_path)
    assert t["name"] == "debian12"
    assert t["variables"]["ssh_password"] == {"type": "string", "sensitive": True, "required": True}
    assert t["variables"]["cpus"] == {"type": "int", "default": 2}
    assert t["source"]["iso"] == {"iso_url": "{{ var.iso_url }}", "iso_checksum": "{{ var.iso_checksum }}"}
    assert t["source"]["boot_wait"] == "5s"
    assert t["source"]["boot_command"][1] == \
        "auto preseed/url=http://{{ build.http_ip }}:{{ build.http_port }}/preseed.cfg "
    assert Path(tmp_path, t["source"]["http_directory"]).resolve() == DATA / "http"
    assert t["machine"]["firmware"] == "uefi" and t["machine"]["cpus"] == "{{ var.cpus }}"
    assert t["machine"]["machine_type"] == "q35" and t["machine"]["disk_size"] == "8G"
    assert t["shutdown"]["command"] == "echo '{{ var.ssh_password }}' | sudo -S /sbin/shutdown -hP now"
    shell, local = t["provisioners"]
    assert shell["sudo"] is True and len(shell["scripts"]) == 2 and shell["expect_disconnect"] is True
    assert local == {"type": "shell-local", "inline": ["echo built at {{ template_dir }}"]}
    assert t["exports"] == [{"type": "qcow2", "compress": True}]
    assert t["post"] == [{"type": "checksum", "types": ["sha256", "sha512"]},
                         {"type": "shell-local", "inline": ["echo compressed"]}]
    assert unmapped(i) == [(31, "locals.build_stamp"), (57, "source.qemu.debian12.ssh_pty"),
                           (71, "build.provisioner[1]")]
    notes = {(f.line, f.key) for f in i.conversion.notes}
    assert {(1, "packer"), (42, "source.qemu.debian12.efi_firmware_code"),
            (53, "source.qemu.debian12.vnc_port_min"), (84, "build.post-processors[0]")} <= notes
    (tmp_path / "t.yaml").write_text(i.yaml_text)
    loaded = load_template(tmp_path / "t.yaml", cli_vars={"ssh_password": "pw"}, environ={})
    assert loaded.machine.cpus == 2 and loaded.source.iso is not None and loaded.machine.firmware == "uefi"


def test_several_provisioners_and_what_does_not_map(tmp_path: Path):
    i, t = imported("several-provisioners.json", tmp_path)
    assert t["name"] == "several-provisioners"
    iso = t["source"]["iso"]
    assert Path(tmp_path, iso["iso_urls"][0]).resolve() == DATA / "iso" / "alma-9.iso"
    assert iso["iso_urls"][1] == "{{ var.iso }}"
    assert iso["iso_checksum"] == "sha256:5a64b7f7d4e2c8d1a6a0f8e3b9c2d7e6f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6"
    assert t["machine"] == {"disk_size": "20480M"}  # hvf is reported, not guessed
    kinds = [p["type"] for p in t["provisioners"]]
    assert kinds == ["shell", "shell", "file", "file", "file", "shell-local", "shell"]
    first = t["provisioners"][0]
    assert first["inline"] == ["echo ${{ '{#' }}PATH} chars of PATH"]  # shell text, escaped for Jinja2
    assert first["pause_before"] == "10s" and first["max_retries"] == 2
    assert t["provisioners"][1]["environment"] == {"PORT": "{{ var.app_port }}"}
    assert [p["destination"] for p in t["provisioners"][2:4]] == ["/etc/app/", "/etc/app/"]
    download = t["provisioners"][4]
    assert download["source"] == "/var/log/dnf.log" and download["direction"] == "download"
    assert Path(tmp_path, download["destination"]).resolve() == DATA / "logs" / "dnf.log"
    assert t["provisioners"][5] == {"type": "shell-local", "inline": ["echo {{ var.app_port }} > port.txt"]}
    assert t["exports"] == [{"type": "raw"}]
    assert unmapped(i) == [(16, "builders[0].accelerator"), (21, "builders[0].disk_additional_size"),
                           (23, "builders[1]"), (28, "provisioners[1].only"), (32, "provisioners[5]"),
                           (33, "provisioners[6].inline_shebang"), (36, "post-processors[0]")]
    # the unmapped items are in the output too, so they survive the conversion
    assert "several-provisioners.json:32: provisioners[5]: provisioner type 'powershell'" in i.yaml_text
    (tmp_path / "t.yaml").write_text(i.yaml_text)
    loaded = load_template(tmp_path / "t.yaml", environ={})
    assert loaded.provisioners[0].inline == ["echo ${#PATH} chars of PATH"]


@pytest.mark.parametrize("name", ["ubuntu-cloud.json", "debian-preseed.pkr.hcl", "several-provisioners.json"])
def test_every_input_key_is_accounted_for(name: str):
    """Each builder/provisioner/post-processor key is converted, noted or reported: none vanish."""
    i = import_packer(DATA / name)
    c = i.conversion
    seen = set(c.mapped) | {f.key for f in c.notes} | {f.key for f in c.unmapped}
    from baker.packer_import.read_hcl import read_hcl
    from baker.packer_import.read_json import read_json

    text = (DATA / name).read_text()
    doc = read_json(text, name) if name.endswith(".json") else read_hcl(text, name)
    for plugin in [*doc.builders, *doc.provisioners, *doc.post_processors]:
        if plugin.where in seen:
            continue  # the whole block is mapped or reported
        for key in plugin.body:
            assert key in ("type", "name") or f"{plugin.where}.{key}" in seen, (plugin.where, key)


# --- the command -----------------------------------------------------------------------------------

def test_cli_writes_a_template_that_validates(tmp_path: Path):
    out = tmp_path / "sub" / "debian.yaml"
    out.parent.mkdir()
    code, stdout, err = run("import", str(DATA / "debian-preseed.pkr.hcl"), "-o", str(out))
    assert code == 0 and stdout == ""
    assert "3 not converted" in err and "debian-preseed.pkr.hcl:71: build.provisioner[1]" in err
    assert run("validate", str(out), "-var", "ssh_password=pw")[0] == 0
    code, _, err = run("import", str(DATA / "debian-preseed.pkr.hcl"), "-o", str(out))
    assert code == 2 and "--overwrite" in err
    assert run("import", str(DATA / "debian-preseed.pkr.hcl"), "-o", str(out), "--overwrite")[0] == 0
    assert run("import", str(DATA / "debian-preseed.pkr.hcl"), "-o", str(tmp_path))[0] == 2


def test_cli_prints_to_stdout_without_output(tmp_path: Path):
    code, stdout, _ = run("import", str(DATA / "ubuntu-cloud.json"))
    assert code == 0 and yaml.safe_load(stdout)["name"] == "ubuntu-22.04"


@pytest.mark.parametrize("body, says", [
    ('{"builders": [{"type": "qemu",}]}', ":1: invalid JSON"),
    ('{\n  "builders": [\n    {"type": "qemu" "iso_url": "x"}\n  ]\n}',
     ":3: invalid JSON: expected ',' or '}'"),
    ('source "qemu" "x" {\n  iso_url = \n}\n', "invalid HCL2"),
    ('{"builders": [{"type": "amazon-ebs"}]}', "no qemu builder"),
    ("[1, 2]", "a Packer template is a JSON object"),
])
def test_unreadable_or_unusable_inputs_fail_with_exit_1(tmp_path: Path, body: str, says: str):
    p = tmp_path / ("t.json" if body.lstrip().startswith(("{", "[")) else "t.pkr.hcl")
    p.write_text(body)
    code, _, err = run("import", str(p))
    assert code == 1 and says in err, err


def test_missing_input_is_exit_1(tmp_path: Path):
    code, _, err = run("import", str(tmp_path / "absent.json"))
    assert code == 1 and "cannot read" in err


# --- pieces ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, hcl, want, unknown", [
    ("{{user `a`}}-{{ user \"b\" }}", False, "{{ var.a }}-{{ var.b }}", []),
    ("{{env `HOME`}}", False, "{{ env_or('HOME', '') }}", []),
    ("{{timestamp}} {{uuid}} {{isotime}}", False, "{{ timestamp() }} {{ uuid() }} {{ isotime() }}", []),
    ("{{ .Name }} {{build_name}} {{template_dir}}", False, "{{ name }} {{ name }} {{ template_dir }}", []),
    ("{{ split `a` }}", False, "{{ '{{' }} split `a` }}", ["{{ split `a` }}"]),
    ("${var.x}/${path.root}", True, "{{ var.x }}/{{ template_dir }}", []),
    ("$${HOME} ${env(\"X\")}", True, "${HOME} {{ env_or('X', '') }}", []),
    ("${local.y}", True, "${local.y}", ["${local.y}"]),
    ("${HOME} {% x %} {# y #}", False, "${HOME} {{ '{%' }} x %} {{ '{#' }} y #}", []),
])
def test_expressions(text: str, hcl: bool, want: str, unknown: list[str]):
    assert convert_text(text, hcl=hcl) == (want, unknown)


def test_json_reader_keeps_lines_and_values():
    doc = parse('{\n "a": [1, 2.5, -3e2, true, null],\n "b": {"c": "\\u00e9\\n"}\n}')
    assert doc == {"a": [1, 2.5, -300.0, True, None], "b": {"c": "é\n"}}
    assert doc.lines == {"a": 2, "b": 3} and doc["b"].line == 3
    with pytest.raises(UnreadableTemplate):
        parse('{"a": 1} x')


_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                               st.sampled_from(["qemu", "shell", "{{user `x`}}", "${var.x}", "file:x"])),
                     lambda inner: st.one_of(st.lists(inner, max_size=4),
                                             st.dictionaries(st.sampled_from(
                                                 ["type", "builders", "provisioners", "post-processors",
                                                  "variables", "iso_url", "disk_image", "inline", "sources",
                                                  "qemuargs", "checksum_types", "x"]), inner, max_size=5)),
                     max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_JSON)
def test_random_json_documents_only_raise_import_failed(doc, tmp_path: Path):
    if isinstance(doc, dict):
        doc.setdefault("builders", [{"type": "qemu", **doc}])
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    try:
        i = import_packer(p)
    except ImportFailed:
        return
    yaml.safe_load(i.yaml_text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(['source "qemu" "x" {', "}", "build {", 'provisioner "shell" {',
                                      'iso_url = "a"', "inline = [\"x\"]", "variable \"v\" {", "default = 1",
                                      "x = ${", "\n", "#", '"', "locals {", "a = b"]), max_size=20)
       .map("\n".join))
def test_random_hcl_text_only_raises_import_failed(text: str, tmp_path: Path):
    p = tmp_path / "t.pkr.hcl"
    p.write_text(text)
    try:
        import_packer(p)
    except ImportFailed:
        pass
