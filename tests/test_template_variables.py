"""Variables (precedence, coercion, secrets) and Jinja rendering, including late fields."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from baker.errors import TemplateError, TemplateErrors
from baker.secrets import MASKER
from baker.template import load_template, render_late, template_to_dict

pytestmark = pytest.mark.usefixtures("fake_exporters")  # a stand-in qcow2-only registry

HEAD = "name: t\nsource:\n  cloud_image:\n    url: https://example.org/base.qcow2\n"


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def load(tmp_path: Path, variables: str, rest: str = "", **kw):
    """A template with `variables:` (indented text) and extra keys after the head."""
    text = HEAD + "variables:\n" + textwrap.indent(textwrap.dedent(variables).strip("\n"), "  ") + "\n"
    text += textwrap.dedent(rest).lstrip("\n")
    kw.setdefault("environ", {})
    return load_template(write(tmp_path, text), **kw)


def fails(tmp_path: Path, variables: str, rest: str = "", **kw) -> str:
    with pytest.raises((TemplateError, TemplateErrors)) as exc:
        load(tmp_path, variables, rest, **kw)
    return str(exc.value)


def at(tmp_path: Path, line: int, col: int, keypath: str) -> str:
    return f"{tmp_path / 't.yaml'}:{line}:{col}: {keypath}: "


# -- precedence and types ---------------------------------------------------------------------------

def test_precedence_default_env_files_cli(tmp_path: Path) -> None:
    decl = "a: d\nb: d\nc: d\nd: d\ne: d\n"
    f1 = write(tmp_path, "b: f1\nc: f1\nd: f1\n", "one.yaml")
    f2 = write(tmp_path, "c: f2\nd: f2\n", "two.yaml")
    env = {"BAKER_VAR_a": "env", "BAKER_VAR_b": "env", "BAKER_VAR_c": "env", "BAKER_VAR_e": "env"}
    t = load(tmp_path, decl, var_files=[f1, f2], cli_vars={"d": "cli"}, environ=env)
    assert t.values == {"a": "env", "b": "f1", "c": "f2", "d": "cli", "e": "env"}


def test_default_only(tmp_path: Path) -> None:
    assert load(tmp_path, "x: hello").values == {"x": "hello"}


@pytest.mark.parametrize(("decl", "given", "expected"), [
    ("type: int", "8080", 8080),
    ("type: float", "1.5", 1.5),
    ("type: bool", "true", True),
    ("type: bool", "off", False),
    ("type: list", "[a, b]", ["a", "b"]),
    ("type: list", '["a", 1]', ["a", 1]),
    ("type: map", "{k: v, n: 2}", {"k": "v", "n": 2}),
    ("type: map", '{"k": "v"}', {"k": "v"}),
    ("type: string", "007", "007"),
    ("default: 80", "8080", 8080),  # type inferred from the default
    ("default: false", "yes", True),
])
def test_coercion_from_strings(tmp_path: Path, decl: str, given: str, expected: object) -> None:
    t = load(tmp_path, "x:\n  " + decl.replace("\n", "\n  "), cli_vars={"x": given})
    assert t.values["x"] == expected
    t = load(tmp_path, "x:\n  " + decl.replace("\n", "\n  "), environ={"BAKER_VAR_x": given})
    assert t.values["x"] == expected


def test_coercion_from_var_file_types(tmp_path: Path) -> None:
    vf = write(tmp_path, "port: 8080\nname_: 12\nflag: true\nitems: [1, 2]\n", "v.yaml")
    t = load(tmp_path, "port: {type: int}\nname_: {type: string}\nflag: {type: bool}\nitems: {type: list}",
             var_files=[vf])
    assert t.values == {"port": 8080, "name_": "12", "flag": True, "items": [1, 2]}


def test_bad_cli_value(tmp_path: Path) -> None:
    msg = fails(tmp_path, "port:\n  type: int\n", cli_vars={"port": "eighty"})
    assert msg == ("variables.port: variable 'port' from -var port=...: expected an integer, got 'eighty'\n"
                   "  hint: 'port' is declared with type: int")


def test_bad_var_file_value_points_into_the_file(tmp_path: Path) -> None:
    vf = write(tmp_path, "# site settings\nport: [1]\n", "site.yaml")
    msg = fails(tmp_path, "port: 80", var_files=[vf])
    assert msg.startswith(f"{vf}:2:7: port: variable 'port' from {vf}: expected an integer, got a list")


def test_bad_default(tmp_path: Path) -> None:
    msg = fails(tmp_path, "port:\n  type: int\n  default: http\n")
    assert msg.startswith(at(tmp_path, 8, 14, "variables.port.default") +
                          "default expected an integer, got 'http'")


def test_bad_type_name(tmp_path: Path) -> None:
    msg = fails(tmp_path, "port:\n  type: integer\n")
    assert msg.startswith(at(tmp_path, 7, 11, "variables.port.type") +
                          "'integer' is not one of: string, int, float, bool, list, map")


def test_unknown_declaration_key(tmp_path: Path) -> None:
    msg = fails(tmp_path, "port:\n  defualt: 80\n")
    assert msg.startswith(at(tmp_path, 7, 5, "variables.port.defualt") +
                          "unknown key 'defualt' (did you mean 'default'?)")


def test_invalid_variable_name(tmp_path: Path) -> None:
    msg = fails(tmp_path, "my-var: 1\n")
    assert msg.startswith(at(tmp_path, 6, 3, "variables.my-var") + "invalid variable name 'my-var'")


def test_required_without_value(tmp_path: Path) -> None:
    msg = fails(tmp_path, "region:\n  required: true\n")
    assert msg == (at(tmp_path, 6, 3, "variables.region") + "variable 'region' is required but has no value\n"
                   "  hint: set it with -var region=..., the environment variable BAKER_VAR_region, "
                   "or a --var-file entry 'region: ...'")
    assert load(tmp_path, "region:\n  required: true\n", cli_vars={"region": "eu"}).values["region"] == "eu"


def test_unknown_cli_var(tmp_path: Path) -> None:
    msg = fails(tmp_path, "nginx_port: 80", cli_vars={"nginx_prot": "1"})
    assert msg.startswith("-var nginx_prot=...: no variable 'nginx_prot' is declared "
                          "(did you mean 'nginx_port'?)")


def test_unknown_var_file_entry_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vf = write(tmp_path, "nginx_prot: 1\n", "v.yaml")
    t = load(tmp_path, "nginx_port: 80", var_files=[vf])
    assert t.values["nginx_port"] == 80
    assert "did you mean 'nginx_port'?" in caplog.text


def test_missing_var_file(tmp_path: Path) -> None:
    assert "--var-file nope.yaml: file not found" in fails(tmp_path, "a: 1", var_files=["nope.yaml"])


def test_unset_optional_values(tmp_path: Path) -> None:
    t = load(tmp_path, "s: {type: string}\nl: {type: list}\nm: {type: map}\ni: {type: int}")
    assert t.values == {"s": "", "l": [], "m": {}, "i": None}


# -- secrets ------------------------------------------------------------------------------------------

def test_sensitive_never_in_errors_or_inspect(tmp_path: Path) -> None:
    MASKER.clear()
    secret = "hunter2-s3cr3t"
    msg = fails(tmp_path, "token:\n  sensitive: true\n  type: int\n", cli_vars={"token": secret})
    assert secret not in msg and "<sensitive>" in msg

    t = load(tmp_path, "token:\n  sensitive: true\n  default: " + secret,
             'provisioners:\n  - type: shell\n    inline: ["curl -H \'X: {{ var.token }}\' x"]\n')
    assert t.sensitive_values == ["token"] and t.values["token"] == secret
    dumped = json.dumps(template_to_dict(t))
    assert secret not in dumped
    assert template_to_dict(t)["values"]["token"] == "<sensitive>"
    assert template_to_dict(t)["variables"]["token"]["default"] == "<sensitive>"
    assert template_to_dict(t)["provisioners"][0]["inline"] == ["curl -H 'X: <sensitive>' x"]
    assert MASKER.mask(f"x {secret} y") == "x <sensitive> y"


def test_sensitive_value_not_in_render_errors(tmp_path: Path) -> None:
    secret = "abcdef-secret"
    msg = fails(tmp_path, f"token:\n  sensitive: true\n  default: {secret}\n",
                "machine:\n  cpus: '{{ var.token }}'\n")
    assert secret not in msg
    assert msg.startswith(at(tmp_path, 10, 9, "machine.cpus") + "expected an integer, got <sensitive>")


def test_short_sensitive_value_still_hidden(tmp_path: Path) -> None:
    msg = fails(tmp_path, "pin:\n  sensitive: true\n  default: 'xy'\n", "machine:\n  cpus: '{{ var.pin }}'\n")
    assert "xy" not in msg.split(": ", 2)[2]


# -- rendering ------------------------------------------------------------------------------------------

def test_native_types_from_whole_expressions(tmp_path: Path) -> None:
    t = load(tmp_path, "cpus: 4\nsb: true\nextra: {type: list, default: [-nographic, -s]}", """
        machine:
          cpus: "{{ var.cpus }}"
          memory: "{{ var.cpus * 1024 }}"
          firmware: uefi
          secure_boot: "{{ var.sb }}"
          qemuargs: "{{ var.extra }}"
        """)
    assert (t.machine.cpus, t.machine.memory, t.machine.secure_boot) == (4, 4096, True)
    assert t.machine.qemuargs == ["-nographic", "-s"]


def test_text_rendering_and_helpers(tmp_path: Path) -> None:
    t = load(tmp_path, "release: 12\nflag: true", """
        description: "{{ name }} r{{ var.release }} {{ var.flag }} {{ env.HOME }} {{ env_or('NOPE', 'x') }}"
        version: "{{ timestamp() }}|{{ isotime('2006-01-02') }}|{{ uuid() }}|{{ 'a b/c' | urlquote }}"
        provisioners:
          - type: shell
            inline:
              - |
                n=${#arr[@]}
                echo {{ template_dir }}
        """, environ={"HOME": "/home/u"})
    assert t.description == "t r12 true /home/u x"
    stamp, day, uid, quoted = t.version.split("|")
    assert re.fullmatch(r"\d{14}", stamp) and re.fullmatch(r"\d{4}-\d\d-\d\d", day)
    assert re.fullmatch(r"[0-9a-f-]{36}", uid) and quoted == "a%20b%2Fc"
    assert t.provisioners[0].inline == [f"n=${{#arr[@]}}\necho {tmp_path}\n"]


def test_undefined_variable(tmp_path: Path) -> None:
    msg = fails(tmp_path, "base_image: x", 'description: "img {{ var.base_imag }}"\n')
    assert msg == (at(tmp_path, 7, 14, "description") +
                   "undefined variable 'var.base_imag' (did you mean 'base_image'?)\n"
                   "  hint: declare it under `variables:` in the template")


def test_undefined_env_and_bare_name(tmp_path: Path) -> None:
    msg = fails(tmp_path, "cpus: 2", 'description: "{{ env.NOPE }}"\nversion: "{{ cpus }}"\n')
    lines = msg.splitlines()
    assert lines[0] == at(tmp_path, 7, 14, "description") + "environment variable 'NOPE' is not set"
    assert lines[2] == at(tmp_path, 8, 10, "version") + "'cpus' is undefined"
    assert "var.cpus" in lines[3]


def test_syntax_error_in_string(tmp_path: Path) -> None:
    msg = fails(tmp_path, "a: 1", 'description: "{{ var.a "\n')
    assert msg.startswith(at(tmp_path, 7, 14, "description") + "template syntax error: ")


def test_variable_defaults_are_not_rendered(tmp_path: Path) -> None:
    t = load(tmp_path, "raw: '{{ not rendered }}'")
    assert t.values["raw"] == "{{ not rendered }}"


# -- late fields ----------------------------------------------------------------------------------------

LATE = """
source:
  boot_command:
    - "<wait5><esc>auto url=http://{{ build.http_ip }}:{{ build.http_port }}/preseed.cfg<enter>"
    - "<wait>{{ .HTTPIP }}:{{ .HTTPPort }} {{ var.suite }}"
  http_content:
    /preseed.cfg: "d-i passwd/username string {{ build.ssh_username }}"
  append: "console=ttyS0 ks=http://{{ build.http_ip }}/ks"
"""


def test_late_fields_stay_raw_and_render_later(tmp_path: Path) -> None:
    text = HEAD.replace("  cloud_image:\n    url: https://example.org/base.qcow2\n", LATE.split("\n", 2)[2])
    text = text.replace("source:\n", "source:\n  iso:\n    iso_url: https://example.org/x.iso\n", 1)
    text += "variables:\n  suite: bookworm\n"
    t = load_template(write(tmp_path, text), environ={})
    assert t.source.boot_command[0].startswith("<wait5><esc>auto url=http://{{ build.http_ip }}")
    assert t.source.boot_command[1] == "<wait>{{ build.http_ip }}:{{ build.http_port }} {{ var.suite }}"
    build = {"http_ip": "10.0.2.2", "http_port": 8123, "ssh_username": "baker"}
    assert render_late(t.source.boot_command[1], t, build) == "<wait>10.0.2.2:8123 bookworm"
    assert render_late(t.source.http_content["/preseed.cfg"], t, build) == \
        "d-i passwd/username string baker"
    assert render_late(t.source.append or "", t, build) == "console=ttyS0 ks=http://10.0.2.2/ks"
    with pytest.raises(TemplateError) as exc:
        render_late("{{ build.http_prot }}", t, build, path="source.boot_command[0]")
    assert str(exc.value).startswith(f"{tmp_path / 't.yaml'}:6:7: source.boot_command[0]: "
                                     "'build.http_prot' is not available (did you mean 'http_port'?)")


def test_late_field_checked_at_load(tmp_path: Path) -> None:
    text = HEAD + '  boot_command:\n    - "<wait>"\n    - "{{ build.http_ip "\n    - "{{ var.suit }}"\n'
    text += "variables:\n  suite: x\n"
    with pytest.raises(TemplateErrors) as exc:
        load_template(write(tmp_path, text), environ={})
    lines = str(exc.value).splitlines()
    assert lines[0].startswith(at(tmp_path, 7, 7, "source.boot_command[1]") + "template syntax error")
    assert lines[2] == at(tmp_path, 8, 7, "source.boot_command[2]") + \
        "undefined variable 'var.suit' (did you mean 'suite'?)"


def test_build_outside_late_field(tmp_path: Path) -> None:
    msg = fails(tmp_path, "a: 1", 'description: "{{ build.http_ip }}"\n')
    assert msg.startswith(at(tmp_path, 7, 14, "description") + "'build' is undefined")
    assert "only in late fields" in msg
