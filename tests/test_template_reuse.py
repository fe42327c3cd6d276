"""`locals:` and `include:`/`!include`: values computed once, shared fragments, errors at the
fragment's own file:line:col, and fragments as build inputs (fingerprint, Make rules)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baker.errors import TemplateError, TemplateErrors
from baker.incremental import fingerprint, make_rule
from baker.inputs import collect
from baker.template import load_template, template_to_dict
from baker.template.model import ShellProvisioner

HEAD = """\
name: t
source:
  cloud_image: {url: base.qcow2, checksum: none}
"""


def put(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if text.startswith(HEAD):  # text after HEAD is dedented on its own
        text = HEAD + textwrap.dedent(text[len(HEAD):])
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def d(tmp_path: Path) -> Path:
    (tmp_path / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 64)
    return tmp_path


def load(path: Path, **kw):
    return load_template(path, environ={"HOME": "/home/u"}, **kw)


def error_text(path: Path, **kw) -> str:
    with pytest.raises((TemplateError, TemplateErrors)) as exc:
        load(path, **kw)
    return str(exc.value)


# --- locals ----------------------------------------------------------------------------------------

def test_locals_are_computed_in_dependency_order_and_keep_native_types(d: Path):
    t = load(put(d, "t.yaml", HEAD + """\
        variables: {version: "1.2", cpus: 4}
        locals:
          tag: "{{ local.base }}-{{ var.version }}"    # uses a local declared after it
          base: "{{ name }}"
          packages: [nginx, curl]
          cpus: "{{ var.cpus * 2 }}"
          home: "{{ env.HOME }}"
        machine: {cpus: "{{ local.cpus }}"}
        provisioners:
          - {type: shell, inline: ["echo {{ local.tag }} {{ local.packages | join(' ') }} {{ local.home }}"]}
        """.replace('"{{ name }}"', '"img"')))
    assert t.locals == {"tag": "img-1.2", "base": "img", "packages": ["nginx", "curl"], "cpus": 8,
                        "home": "/home/u"}
    assert t.machine.cpus == 8
    assert isinstance(t.provisioners[0], ShellProvisioner)
    assert t.provisioners[0].inline == ["echo img-1.2 nginx curl /home/u"]


def test_a_local_is_computed_once(d: Path):
    t = load(put(d, "t.yaml", HEAD + """\
        locals: {id: "{{ uuid() }}"}
        description: "{{ local.id }}"
        version: "{{ local.id }}"
        """))
    assert t.description == t.version == t.locals["id"]


def test_a_cycle_is_named_in_full_at_the_expression_that_closes_it(d: Path):
    msg = error_text(put(d, "t.yaml", HEAD + """\
        locals:
          a: "{{ local.b }}"
          b: "x{{ local.c }}"
          c: "{{ local.a }}"
        """))
    assert msg.count("locals form a cycle") == 1, msg
    assert "t.yaml:7:6: locals.c: locals form a cycle: local.a -> local.b -> local.c -> local.a" in msg
    self_ref = error_text(put(d, "t.yaml", HEAD + 'locals:\n  a: "{{ local.a }}"\n'))
    assert "t.yaml:5:6: locals.a: locals form a cycle: local.a -> local.a" in self_ref


def test_unknown_local_has_did_you_mean_and_position_in_locals_and_in_the_template(d: Path):
    msg = error_text(put(d, "t.yaml", HEAD + """\
        locals:
          packages: "{{ local.pakages }}"
        """))
    assert "t.yaml:5:13: locals.packages: undefined local 'local.pakages' (did you mean 'packages'?)" in msg
    msg = error_text(put(d, "t.yaml", HEAD + """\
        locals: {stamp: x}
        provisioners:
          - type: shell
            inline: ["echo {{ local.stmp }}"]
        """))
    assert "t.yaml:7:14: provisioners[0].inline[0]: undefined local 'local.stmp' (did you mean 'stamp'?)" \
        in msg
    assert "hint: define it under `locals:`" in msg
    msg = error_text(put(d, "t.yaml", HEAD + 'locals: {stamp: x}\ndescription: "{{ stamp }}"\n'))
    assert "locals are written with their prefix: {{ local.stamp }}" in msg


def test_a_render_error_in_one_local_is_reported_once_not_in_every_user(d: Path):
    msg = error_text(put(d, "t.yaml", HEAD + """\
        locals:
          bad: "{{ var.nope }}"
          user: "{{ local.bad }}-x"
        description: "{{ local.user }}"
        """))
    assert "t.yaml:5:8: locals.bad: undefined variable 'var.nope'" in msg
    assert "locals.user" not in msg and "description" not in msg


def test_locals_bad_shapes_and_names(d: Path):
    assert "'locals' must be a mapping of name: value, got a list" in error_text(
        put(d, "t.yaml", HEAD + "locals: [a]\n"))
    assert "invalid local name 'my-name'" in error_text(put(d, "t.yaml", HEAD + "locals: {my-name: 1}\n"))


def test_a_local_from_a_secret_is_masked(d: Path):
    t = load(put(d, "t.yaml", HEAD + """\
        variables: {token: {default: hunter2-secret, sensitive: true}}
        locals:
          header: "Bearer {{ var.token | b64encode }}"
          again: "{{ local.header }}!"
          plain: hello
        provisioners:
          - {type: shell, inline: ["curl -H '{{ local.again }}'"]}
        """))
    assert sorted(t.sensitive_locals) == ["again", "header"]
    shown = str(template_to_dict(t))
    assert "aHVudGVyMi1zZWNyZXQ=" not in shown and "hello" in shown


def test_late_fields_see_locals(d: Path):
    from baker.template import render_late

    t = load(put(d, "t.yaml", HEAD.replace("checksum: none}", "checksum: none}\n  boot_command: "
                                          "['{{ local.k }} {{ build.http_port }}']") + "locals: {k: ks}\n"))
    assert render_late(t.source.boot_command[0], t, {"http_port": 8000},
                       path="source.boot_command[0]") == "ks 8000"


# --- include ---------------------------------------------------------------------------------------

def test_include_merges_fragments_under_the_template(d: Path):
    put(d, "common/machine.yaml", """\
        machine: {cpus: 4, memory: 4096, qemuargs: [-no-reboot]}
        provisioners:
          - {type: shell, script: scripts/base.sh}   # relative to the fragment's folder
        """)
    put(d, "common/scripts/base.sh", "echo base\n")
    put(d, "common/more.yaml", """\
        machine: {memory: 3072}
        provisioners: [{type: shell, inline: [more]}]
        exports: [{type: raw}]
        """)
    t = load(put(d, "t.yaml", HEAD + """\
        include: [common/machine.yaml, common/more.yaml]
        machine: {cpus: 2}
        provisioners: [{type: shell, inline: [own]}]
        """))
    assert (t.machine.cpus, t.machine.memory, t.machine.qemuargs) == (2, 3072, ["-no-reboot"])
    steps = [(p.script, p.inline) for p in t.provisioners]  # type: ignore[union-attr]
    assert steps == [(str(d / "common/scripts/base.sh"), []), (None, ["more"]), (None, ["own"])]
    assert [e.type for e in t.exports] == ["raw"]
    assert t.include == ["common/machine.yaml", "common/more.yaml"]
    assert t.included_files == [d / "common/machine.yaml", d / "common/more.yaml"]


def test_lists_other_than_steps_are_replaced_and_empty_steps_keep_the_fragments(d: Path):
    put(d, "f.yaml", "machine: {qemuargs: [-a]}\nprovisioners: [{type: shell, inline: [f]}]\n")
    t = load(put(d, "t.yaml", HEAD + "include: f.yaml\nmachine: {qemuargs: [-b]}\nprovisioners:\n"))
    assert t.machine.qemuargs == ["-b"]
    assert [p.inline for p in t.provisioners] == [["f"]]  # type: ignore[union-attr]


def test_include_tag_at_a_value_and_spliced_into_a_list(d: Path):
    put(d, "steps.yaml", "- {type: shell, inline: [one]}\n- {type: shell, inline: [two]}\n")
    put(d, "m.yaml", "cpus: 3\nmemory: 1024\n")
    put(d, "nested.yaml", "include: [inner.yaml]\nmachine: {cpus: 1}\n")
    put(d, "inner.yaml", "machine: {memory: 512}\ndescription: from inner\n")
    t = load(put(d, "t.yaml", HEAD + """\
        include: [nested.yaml]
        communicator: {ssh_timeout: 5m}
        machine: !include m.yaml
        provisioners:
          - {type: shell, inline: [first]}
          - !include steps.yaml
          - {type: shell, inline: [last]}
        """))
    assert [p.inline[0] for p in t.provisioners] == ["first", "one", "two", "last"]  # type: ignore[union-attr]
    assert (t.machine.cpus, t.machine.memory, t.description) == (3, 1024, "from inner")
    assert set(t.included_files) == {d / "m.yaml", d / "steps.yaml", d / "nested.yaml", d / "inner.yaml"}


def test_an_error_inside_a_fragment_points_at_the_fragment(d: Path):
    put(d, "common/m.yaml", "machine:\n  cpus: 2\n  memroy: 4096\n")
    put(d, "common/steps.yaml", "- {type: shell, inline: [a]}\n- {type: shel, inline: [b]}\n")
    msg = error_text(put(d, "t.yaml", HEAD + """\
        include: [common/m.yaml]
        provisioners: !include common/steps.yaml
        """))
    assert "common/m.yaml:3:3: machine.memroy: unknown key 'memroy' (did you mean 'memory'?)" in msg
    assert "common/steps.yaml:2:10: provisioners[1].type: unknown type 'shel' (did you mean 'shell'?)" in msg


def test_a_missing_script_in_a_fragment_is_looked_for_beside_the_fragment(d: Path):
    put(d, "common/s.yaml", "provisioners: [{type: shell, script: nope.sh}]\n")
    msg = error_text(put(d, "t.yaml", HEAD + "include: [common/s.yaml]\n"))
    assert f"file not found: 'nope.sh' (looked for {d / 'common/nope.sh'})" in msg
    assert "common/s.yaml:1:38" in msg and "relative to the fragment's folder" in msg


def test_yaml_syntax_error_in_a_fragment(d: Path):
    put(d, "bad.yaml", "machine: {cpus: 2\n")
    msg = error_text(put(d, "t.yaml", HEAD + "include: [bad.yaml]\n"))
    assert msg.startswith(f"{d / 'bad.yaml'}:2:1: YAML syntax error")


def test_missing_fragment_and_cycles_are_clear_errors(d: Path):
    t = put(d, "t.yaml", HEAD + "include: [common/nope.yaml]\n")
    msg = error_text(t)
    assert f"t.yaml:4:11: include[0]: included file not found: common/nope.yaml (looked for " \
           f"{d / 'common/nope.yaml'})" in msg
    put(d, "a.yaml", "include: [b.yaml]\n")
    put(d, "b.yaml", "machine: !include a.yaml\n")
    msg = error_text(put(d, "t.yaml", HEAD + "include: [a.yaml]\n"))
    assert "b.yaml:1:10: machine: include cycle: a.yaml -> b.yaml -> a.yaml" in msg
    msg = error_text(put(d, "t.yaml", HEAD + "machine: !include t.yaml\n"))
    assert "include cycle: t.yaml -> t.yaml" in msg


def test_include_shape_errors(d: Path):
    put(d, "list.yaml", "- a\n")
    assert "a fragment named in include: must be a mapping of template keys, got a list" in error_text(
        put(d, "t.yaml", HEAD + "include: [list.yaml]\n"))
    assert "'include' must be a list of file names, got a mapping" in error_text(
        put(d, "t.yaml", HEAD + "include: {a: b}\n"))
    assert "an include needs a file name" in error_text(put(d, "t.yaml", HEAD + "machine: !include\n"))


def test_duplicate_keys_inside_a_file_are_still_reported_after_merging(d: Path):
    put(d, "f.yaml", "machine: {cpus: 1}\n")
    msg = error_text(put(d, "t.yaml", HEAD + "include: [f.yaml]\nmachine: {cpus: 2}\nmachine: {cpus: 3}\n"))
    assert "duplicate key 'machine'" in msg


# --- fragments are build inputs ----------------------------------------------------------------------

def test_fragments_are_make_prerequisites_and_provenance_inputs(d: Path, monkeypatch):
    monkeypatch.chdir(d)
    put(d, "common/m.yaml", "machine: {cpus: 3}\n")
    put(d, "steps.yaml", "- {type: shell, inline: [x]}\n")
    t = load(put(d, "t.yaml", HEAD + "include: [common/m.yaml]\nprovisioners: !include steps.yaml\n"))
    rule = make_rule(t, d / "images" / "t")
    prereqs = rule.partition(": ")[2].split("\n\n")[0].replace("\\\n", " ").split()
    assert prereqs[0] == "t.yaml" and set(prereqs[1:3]) == {"common/m.yaml", "steps.yaml"}
    assert "\ncommon/m.yaml:\n" in rule
    kinds = [(i.kind, i.path) for i in collect(t, base_url=None, base_sha256=None).files]
    assert ("include", d / "common/m.yaml") in kinds


def test_a_fragment_change_changes_the_fingerprint_but_its_comments_do_not(d: Path, monkeypatch):
    monkeypatch.chdir(d)
    frag = put(d, "common/m.yaml", "machine: {cpus: 3}\n")
    t = put(d, "t.yaml", HEAD + "include: [common/m.yaml]\n")
    before = fingerprint(load(t))
    frag.write_text("# why three\nmachine: {cpus: 3}   # yes\n")
    assert fingerprint(load(t)).digest == before.digest
    frag.write_text("machine: {cpus: 4}\n")
    after = fingerprint(load(t))
    assert after.digest != before.digest
    assert sorted(k for k in after.parts if after.parts[k] != before.parts.get(k)) == [
        "include common/m.yaml", "template machine"]


def test_the_readme_example_means_what_the_readme_says(d: Path):
    import re

    from tests.helpers.paths import ROOT

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Sharing parts of templates.*?```yaml\n(.*?)```", readme, re.S)
    assert block is not None
    put(d, "common/machine.yaml", "machine: {cpus: 4, memory: 1024}\n")
    put(d, "common/base-steps.yaml", "provisioners:\n  - {type: shell, inline: [apt-get update]}\n")
    put(d, "common/cleanup-steps.yaml", "- {type: shell, inline: [apt-get clean]}\n")
    t = load(put(d, "t.yaml", "name: demo\nvariables: {flavour: {default: small}}\n"
                              "source: {cloud_image: {url: base.qcow2, checksum: none}}\n" + block.group(1)))
    assert (t.machine.cpus, t.machine.memory) == (4, 4096)
    assert [p.inline for p in t.provisioners] == [  # type: ignore[union-attr]
        ["apt-get update"], ["apt-get install -y nginx curl"], ["apt-get clean"]]
    assert re.fullmatch(r"web-small-\d{8}", t.description)


def test_if_changed_rebuilds_when_a_fragment_changes_its_meaning(d: Path, monkeypatch):
    import json

    from baker.incremental import decide

    monkeypatch.chdir(d)
    frag = put(d, "common/steps.yaml", "- {type: shell, inline: [one]}\n")
    t = put(d, "t.yaml", HEAD + "provisioners: !include common/steps.yaml\n")
    fp = fingerprint(load(t))
    out = d / "out"
    out.mkdir()
    (out / "t.qcow2").write_bytes(b"x")
    (out / "manifest.json").write_text(json.dumps({
        "name": "t", "built_at": "2026-12-01T00:00:00Z", "inputs": fp.to_dict(),
        "artifacts": [{"export": "qcow2", "file": "t.qcow2", "size": 1}]}))
    assert decide(fingerprint(load(t)), out, name="t").up_to_date
    frag.write_text("- {type: shell, inline: [two]}\n")
    again = decide(fingerprint(load(t)), out, name="t")
    assert not again.up_to_date and "include common/steps.yaml" in again.reason


def test_make_rebuilds_an_image_when_its_fragment_is_touched(d: Path):
    import os
    import subprocess
    import sys
    import time

    from tests.helpers.paths import ROOT

    frag = put(d, "common/m.yaml", "machine: {cpus: 1}\n")
    for name in ("one", "two"):
        put(d, f"{name}.yaml", HEAD.replace("name: t", f"name: {name}")
            + ("include: [common/m.yaml]\n" if name == "one" else ""))
        rule = subprocess.run([sys.executable, "-m", "baker", "deps", f"{name}.yaml", "-o", f"images/{name}"],
                              cwd=d, check=True, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        (d / f"{name}.d").write_text(rule.stdout)
    (d / "Makefile").write_text(
        "all: images/one/manifest.json images/two/manifest.json\n"
        "images/%/manifest.json:\n\tmkdir -p $(@D) && echo built $* && touch $@\n"
        "-include one.d two.d\n")
    make = ["make", "--no-print-directory"]
    assert "built one" in subprocess.run(make, cwd=d, capture_output=True, text=True, check=True).stdout
    assert "Nothing to be done" in subprocess.run(make, cwd=d, capture_output=True, text=True).stdout
    time.sleep(1.1)
    frag.write_text("machine: {cpus: 2}\n")
    again = subprocess.run(make, cwd=d, capture_output=True, text=True, check=True).stdout
    assert "built one" in again and "built two" not in again


def test_a_local_cannot_use_the_name_and_says_why(d: Path):
    msg = error_text(put(d, "t.yaml", HEAD + 'locals: {n: "{{ name }}-x"}\n'))
    assert "t.yaml:4:13: locals.n: 'name' is undefined" in msg
    assert "computed before the template's name" in msg
