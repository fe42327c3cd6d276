"""`post:` steps: after publishing, shell-local hooks see the artifacts and checksum writes more digests.

The pipeline here is the real one minus the VM: a small empty qcow2 from qemu-img stands in for the
shut-down build disk, then the real export, record and publish steps and the post steps run through
`run_build`, which emits the same --json events as a full build.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from baker import build as build_mod
from baker.errors import TemplateError, TemplateErrors
from baker.events import event_problems
from baker.output import Reporter
from baker.state import BuildOptions, BuildState
from baker.steps import ExportImages, PrepareDirs, Publish, RecordManifest, plan_steps
from baker.steps.post import PostStep
from baker.template import load_template

HOOK = """#!/bin/sh
# records what a hook sees, for the test to read back
{
  echo "name=$BAKER_BUILD_NAME version=$BAKER_BUILD_VERSION"
  echo "out=$BAKER_OUTPUT_DIR"
  echo "qcow2=$BAKER_ARTIFACT_QCOW2"
  echo "manifest_exists=$(test -f "$BAKER_MANIFEST" && echo yes)"
  echo "$BAKER_ARTIFACTS" | while read -r f; do echo "artifact=$f"; done
} > "$HOOK_LOG"
"""


class EmptyDisk:
    """Stands in for boot + provision + shutdown: an empty, valid qcow2 as the build disk."""

    name = "empty-disk"

    def run(self, s: BuildState) -> None:
        assert s.work_dir is not None
        s.disk = s.work_dir / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(s.disk), "16M"], check=True)

    def cleanup(self, s: BuildState) -> None:
        pass


def write(tmp: Path, post: str, version: str = "1.0") -> Path:
    (tmp / "base.qcow2").write_bytes(b"")
    (tmp / "hook.sh").write_text(HOOK)
    (tmp / "hook.sh").chmod(0o755)
    t = tmp / "t.yaml"
    t.write_text(f"""name: posty
version: "{version}"
source: {{cloud_image: {{url: base.qcow2, checksum: none}}}}
exports: [{{type: qcow2}}, {{type: raw}}]
post:
{post}
""")
    return t


def bake(template: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[dict]]:
    t = load_template(template, environ={})
    steps = [PrepareDirs(), EmptyDisk(), ExportImages(), RecordManifest(), Publish(),
             *[PostStep(i, p) for i, p in enumerate(t.post, 1)]]
    monkeypatch.setattr(build_mod, "plan_steps", lambda _t, **_: steps)
    stream = io.StringIO()
    reporter = Reporter("json", stream=stream)
    outcome = build_mod.run_build(t, BuildOptions(output_dir=out), reporter)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [p for e in events for p in event_problems(e)] == []
    return outcome.exit_code, events


def test_hooks_see_the_published_build_and_checksum_writes_more_digests(tmp_path: Path, monkeypatch):
    log = tmp_path / "hook.log"
    monkeypatch.setenv("HOOK_LOG", str(log))
    t = write(tmp_path, "  - {type: checksum, types: [sha512, md5, sha256]}\n"
                        "  - {type: shell-local, name: record, script: hook.sh}\n")
    out = tmp_path / "out"
    rc, events = bake(t, out, monkeypatch)
    assert rc == 0
    steps = [e["step"] for e in events if e["event"] == "step_done"]
    assert steps[-3:] == ["publish", "post[1] checksum (sha512, md5, sha256)", "post[2] shell-local (record)"]
    assert events[-1]["event"] == "build_done"
    for tool, sums in (("sha512sum", "SHA512SUMS"), ("md5sum", "MD5SUMS"), ("sha256sum", "SHA256SUMS")):
        r = subprocess.run([tool, "-c", sums], cwd=out, capture_output=True, text=True)
        assert r.returncode == 0 and "posty.qcow2: OK" in r.stdout and "posty.raw: OK" in r.stdout, r
    seen = log.read_text().splitlines()
    assert "name=posty version=1.0" in seen and f"out={out}" in seen and "manifest_exists=yes" in seen
    assert f"qcow2={out}/posty.qcow2" in seen
    assert {f"artifact={out}/posty.qcow2", f"artifact={out}/posty.raw"} <= set(seen)


def test_a_failing_hook_fails_the_build_but_keeps_the_published_image(tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    assert bake(write(tmp_path, "  - {type: checksum}\n", version="1.0"), out, monkeypatch)[0] == 0
    t = write(tmp_path, "  - type: shell-local\n    name: notify\n    inline:\n"
                        "      ['echo uploading $BAKER_BUILD_VERSION', 'echo no route >&2', 'exit 3']\n",
              version="2.0")
    rc, events = bake(t, out, monkeypatch)
    assert rc == 1
    [failed] = [e for e in events if e["event"] == "build_failed"]
    assert failed["step"] == "post[1] shell-local (notify)" and "exited with 3" in failed["message"]
    assert "published in" in failed["message"]  # the hint says the image is there
    tail = failed["tails"]["hook output (last lines)"]
    assert "out: uploading 2.0" in tail and "err: no route" in tail
    assert "serial console (last lines)" not in failed["tails"]
    # the new image is published and complete; only the hook failed
    assert json.loads((out / "manifest.json").read_text())["version"] == "2.0"
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True).returncode == 0
    assert not list(tmp_path.glob(".out.staging-*"))


def test_post_steps_come_after_publish_in_the_plan(tmp_path: Path):
    t = load_template(write(tmp_path, "  - {type: checksum, types: [md5]}\n  - {type: shell-local, "
                                      "inline: [echo hi]}\n"), environ={})
    names = [s.name for s in plan_steps(t)]
    assert names[-4:] == ["publish", "store", "post[1] checksum (md5)", "post[2] shell-local (echo hi)"]


@pytest.mark.parametrize("post, says", [
    ("  - {type: shell-locl, inline: [x]}\n", "did you mean 'shell-local'"),
    ("  - {type: shell-local}\n", "exactly one of inline, script or scripts"),
    ("  - {type: shell-local, inline: [x], script: hook.sh}\n", "found inline and script"),
    ("  - {type: shell-local, script: missing.sh}\n", "file not found: 'missing.sh'"),
    ("  - {type: checksum, types: [sha3]}\n", "is not one of: md5, sha1"),
    ("  - {type: checksum, types: []}\n", "at least one digest type"),
    ("  - {type: checksum, types: [md5, md5]}\n", "listed twice"),
    ("  - {type: checksum, typs: [md5]}\n", "did you mean 'types'"),
    ("  - {type: shell-local, inline: [x], max_retries: -1}\n", "must not be negative"),
])
def test_bad_post_steps_are_template_errors(tmp_path: Path, post: str, says: str):
    with pytest.raises((TemplateError, TemplateErrors)) as ei:
        load_template(write(tmp_path, post), environ={})
    assert says in str(ei.value) and "post[0]" in str(ei.value)


def test_packer_spelling_checksum_types(tmp_path: Path):
    t = load_template(write(tmp_path, "  - {type: checksum, checksum_types: [sha1, md5]}\n"), environ={})
    assert t.post[0].types == ["sha1", "md5"]
