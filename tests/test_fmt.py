"""`baker fmt`: model key order, comments and style kept, idempotent, --check/--diff exit codes,
atomic writes that keep the file mode, and never a change of meaning."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baker.fmt import FormatError, format_file, format_text
from baker.fmt.format import meaning
from baker.fmt.order import field_rank
from baker.template.model import FileProvisioner, MachineConfig, Template
from tests.helpers.paths import ROOT

BAKER = [sys.executable, "-m", "baker"]
MESSY = textwrap.dedent("""\
    # yaml-language-server: $schema=../docs/template.schema.json
    # A template written in no particular order.
    provisioners:
      - inline: [apt-get update]   # refresh first
        type: shell
        name: update
      - {destination: /etc/motd, type: file, content: "hi {{ var.who }}"}

    # how the VM looks
    machine:
        memory: 1024
        cpus: 2    # two is plenty
        my_future_key: kept
    name: messy
    source:
      cloud_image: {checksum: none, url: "{{ var.base }}"}
    variables:
      who: {description: "who to greet", default: world}
      base: {default: base.qcow2}
    exports:
      - compress: true
        type: qcow2
    """)


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAKER, *argv], capture_output=True, text=True, cwd=cwd or ROOT)


def test_keys_follow_the_model_and_comments_stay_with_their_keys():
    out = format_text(MESSY)
    assert out.startswith("# yaml-language-server: $schema=../docs/template.schema.json\n"
                          "# A template written in no particular order.\nname: messy\n")
    top = [line.split(":")[0] for line in out.splitlines() if line[:1].isalpha()]
    assert top == ["name", "variables", "source", "machine", "provisioners", "exports"]
    assert re.search(r"\n# how the VM looks\nmachine:\n  cpus: 2 +# two is plenty\n  memory: 1024\n", out)
    assert "  - type: shell\n    name: update\n    inline: [apt-get update]   # refresh first\n" in out
    assert '{type: file, content: "hi {{ var.who }}", destination: /etc/motd}' in out  # quotes kept
    assert "  my_future_key: kept\n" in out  # unknown keys are never dropped
    assert "who: {default: world, description: \"who to greet\"}" in out
    assert "exports:\n  - type: qcow2\n    compress: true\n" in out
    assert out.endswith("\n") and meaning(out) == meaning(MESSY)


def test_unknown_keys_keep_their_slot():
    out = format_text("zz: 1\nname: a\nx-anchors: &a {k: v}\ndescription: d\n")
    assert out == "zz: 1\nname: a\nx-anchors: &a {k: v}\ndescription: d\n"
    out = format_text("description: d\nzz: 1\nname: a\n")
    assert out == "name: a\nzz: 1\ndescription: d\n"


def test_the_order_is_the_models_field_order():
    rank = field_rank(MachineConfig)
    names = [f.name for f in dataclasses.fields(MachineConfig)]
    assert sorted(names, key=rank.__getitem__) == names
    assert field_rank(FileProvisioner)["type"] < field_rank(FileProvisioner)["name"]
    top = field_rank(Template)
    assert top["name"] < top["include"] < top["variables"] < top["locals"] < top["source"] < top["exports"]
    assert "path" not in top and "values" not in top  # not template keys


def test_aliases_sort_as_their_field_and_tags_and_jinja_stay_untouched():
    src = textwrap.dedent("""\
        source:
          iso: {iso_checksum: none, url: "{{ var.iso }}"}
        shutdown: {shutdown_timeout: 5m, shutdown_command: "sudo poweroff"}
        provisioners:
          - !include common/steps.yaml
          - {type: shell, inline: ["echo {{ local.x }}", '{% if var.y %}y{% endif %}']}
        name: t
        """)
    out = format_text(src)
    assert 'iso: {url: "{{ var.iso }}", iso_checksum: none}' in out
    assert 'shutdown: {shutdown_command: "sudo poweroff", shutdown_timeout: 5m}' in out
    assert "  - !include common/steps.yaml\n" in out
    assert """inline: ["echo {{ local.x }}", '{% if var.y %}y{% endif %}']""" in out


def test_a_string_broken_over_lines_keeps_its_breaks_as_a_folded_block():
    src = ('name: t\nsource:\n  cloud_image:\n    checksum: "{{ var.a or\n      var.b }}"\n'
           "    url: x\n\nmachine: {cpus: 1}\n")
    out = format_text(src)
    assert out == ("name: t\nsource:\n  cloud_image:\n    url: x\n    checksum: >-\n      {{ var.a or\n"
                   "      var.b }}\n\nmachine: {cpus: 1}\n")
    assert format_text(out) == out


def test_document_start_and_indentation_are_normalised():
    src = "# top\n---\nname: t\nprovisioners:\n- type: shell\n  inline:\n  - a\n"
    assert format_text(src) == "# top\n---\nname: t\nprovisioners:\n  - type: shell\n    inline:\n      - a\n"


@pytest.mark.parametrize("bad, says", [
    ("name: [\n", "cannot format"),
    ("name: a\nname: b\n", "duplicate key"),
])
def test_what_cannot_be_formatted_is_an_error(bad: str, says: str):
    with pytest.raises(FormatError, match=says):
        format_text(bad, "t.yaml")


TEMPLATES = sorted([*ROOT.glob("templates/*.yaml"), *ROOT.glob("tests/data/**/*.yaml"),
                    *ROOT.glob("tests/data/**/*.yml")])


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_template_is_formatted_and_fmt_is_idempotent(path: Path):
    text = path.read_text()
    once = format_text(text)
    assert format_text(once) == once
    assert meaning(once) == meaning(text)
    assert once == text, f"{path} is not formatted: run baker fmt {path.relative_to(ROOT)}"


_KEYS = ["name: t", "description: d", "version: '1'", "machine: {memory: 512, cpus: 1}",
         "source: {cloud_image: {checksum: none, url: x}}", "exports: [{type: qcow2}]",
         "provisioners: [{inline: [a], type: shell}]", "variables: {a: {default: 1}}", "locals: {b: 2}",
         "generalize: {logs: false, enabled: true}"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(_KEYS), comment=st.booleans())
def test_any_key_order_formats_to_the_same_text(order: list[str], comment: bool):
    text = "\n".join(f"{line}{'  # c' if comment and i == 0 else ''}" for i, line in enumerate(order)) + "\n"
    canonical = format_text("\n".join(_KEYS) + "\n")
    out = format_text(text)
    assert format_text(out) == out
    assert re.sub(r" +# c", "", out) == canonical


# --- the command -----------------------------------------------------------------------------------

def test_check_and_diff_exit_codes_and_write_nothing(tmp_path: Path):
    messy = tmp_path / "messy.yaml"
    messy.write_text(MESSY)
    tidy = tmp_path / "tidy.yaml"
    tidy.write_text(format_text(MESSY))
    r = run("fmt", "--check", str(messy), str(tidy))
    assert (r.returncode, r.stdout) == (1, f"would reformat {messy}\n")
    assert messy.read_text() == MESSY
    r = run("fmt", "--check", str(tidy))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = run("fmt", "--diff", str(tmp_path))  # a directory: its *.yaml files
    assert r.returncode == 1 and f"--- {messy} (original)" in r.stdout and "+name: messy" in r.stdout
    assert messy.read_text() == MESSY
    (tmp_path / "broken.yaml").write_text("name: [\n")
    r = run("fmt", "--check", str(tmp_path))
    assert r.returncode == 2 and "broken.yaml: cannot format" in r.stderr and "Traceback" not in r.stderr
    r = run("fmt", str(tmp_path / "absent.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_fmt_rewrites_atomically_and_keeps_the_mode(tmp_path: Path, monkeypatch):
    p = tmp_path / "t.yaml"
    p.write_text(MESSY)
    os.chmod(p, 0o640)
    inode = p.stat().st_ino
    r = run("fmt", str(p))
    assert (r.returncode, r.stdout) == (0, f"formatted {p}\n")
    assert p.read_text() == format_text(MESSY)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert p.stat().st_ino != inode  # a new file renamed into place, not rewritten in place
    assert sorted(x.name for x in tmp_path.iterdir()) == ["t.yaml"]  # no temp file left
    assert run("fmt", str(p)).stdout == ""  # nothing to do the second time

    # a failure while writing leaves the original untouched
    p.write_text(MESSY)
    import baker.fsutil

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(baker.fsutil.os, "replace", boom)
    with pytest.raises(OSError):
        format_file(p, write=True)
    assert p.read_text() == MESSY
    assert sorted(x.name for x in tmp_path.iterdir()) == ["t.yaml"]


def test_fmt_writes_through_a_symlink(tmp_path: Path):
    real = tmp_path / "real.yaml"
    real.write_text("description: d\nname: t\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    format_file(link, write=True)
    assert link.is_symlink() and real.read_text() == "name: t\ndescription: d\n"


def test_exactly_one_trailing_newline_unless_a_kept_block_needs_more():
    assert format_text("name: t\n\n\n\n") == "name: t\n"
    assert format_text("name: t") == "name: t\n"
    kept = "description: |+\n  x\n\n\n"
    assert meaning(format_text(kept)) == meaning(kept)


@pytest.mark.parametrize("text", ["mode: 0644\n", "enabled: yes\n", "v: 1.10\n", "s: 010\n", "b: off\n",
                                  "h: 0x1F\n", "k: !!str 12\n", "p: 12:30\n", "t: 2001-01-01\n"])
def test_yaml_1_1_scalars_are_written_as_they_were(text: str):
    assert format_text(text) == text


def test_anchors_follow_their_first_use_and_merges_are_left_alone():
    out = format_text("post: &steps [{type: shell-local, inline: [a]}]\nname: t\nprovisioners: *steps\n")
    assert out == "name: t\nprovisioners: &steps [{type: shell-local, inline: [a]}]\npost: *steps\n"
    machine = "machine:\n  <<: *m\n  memory: 1024\n  accelerator: tcg\n"
    merged = f"x-m: &m {{cpus: 1, memory: 512}}\n{machine}name: t\n"
    out = format_text(merged)
    assert machine in out and meaning(out) == meaning(merged)
