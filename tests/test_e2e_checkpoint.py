"""Checkpoints for real: a build with `checkpoints: true` from the base image, then the same template
with only its last provisioner changed. Two builds in all, shared by every test here.

The first two provisioners append a line to a file on each run, so the image of the second build
proves they ran once; the changed last step's output proves the resumed build ran it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.guest import read_guest_file
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

TEMPLATE = """\
name: ck-e2e
version: "1.0.{{{{ timestamp() }}}}"
checkpoints: true
source:
  cloud_image: {{url: '{base}', checksum: 'file:{base}.sha256'}}
machine: {{accelerator: tcg, cpus: 1, memory: 768, disk_size: 3G}}
policy: {{enabled: false}}
provisioners:
  - {{type: shell, name: one, inline: ["date +%s.%N >> /etc/ck-one-runs"]}}
  - {{type: shell, name: two, inline: ["date +%s.%N >> /etc/ck-two-runs"]}}
  - {{type: shell, name: three, inline: ["echo {last} > /etc/ck-three"]}}
exports: [{{type: qcow2}}]
"""


def baker(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict], float]:
    env = {**os.environ, "BAKER_CACHE_DIR": str(folder / "cache"), "BAKER_STORE": str(folder / "store")}
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "baker", *args], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=1800)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r, events, time.monotonic() - started


def messages(events: list[dict]) -> str:
    return "\n".join(e.get("message", "") for e in events if e["event"] in ("log", "info"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, base_image: Path) -> dict:
    d = tmp_path_factory.mktemp("ckpt")
    template = d / "ck.yaml"
    out: dict = {"dir": d}
    for run, last in (("full", "v1"), ("resumed", "v2")):
        template.write_text(TEMPLATE.format(base=base_image, last=last))
        r, events, took = baker(d, "build", str(template), "-o", str(d / run), "--json")
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        out[run] = {"events": events, "seconds": took,
                    "manifest": json.loads((d / run / "manifest.json").read_text())}
    full, resumed = out["full"]["seconds"], out["resumed"]["seconds"]
    print(f"\ncheckpoints: full bake {full:.1f}s, last provisioner changed {resumed:.1f}s "
          f"({resumed / full:.2f}x)")
    return out


def test_the_rebuild_resumes_after_the_unchanged_provisioners(builds: dict):
    text = messages(builds["resumed"]["events"])
    assert "resuming from checkpoint after provisioner 2 (provision[2] shell (two)), saved " in text
    assert "provision[1] shell (one): in the checkpoint, not run again" in text
    assert "provision[2] shell (two): in the checkpoint, not run again" in text
    assert "checkpoint after provisioner 3 saved" in text
    assert "no usable checkpoint" in messages(builds["full"]["events"])


def test_the_image_has_the_old_steps_once_and_the_new_last_step(builds: dict):
    d: Path = builds["dir"]
    image = d / "resumed" / "ck-e2e.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, text=True).stdout)
    assert "backing-filename" not in info and "full-backing-filename" not in info  # flattened
    work = d / "read"
    work.mkdir(exist_ok=True)
    one = read_guest_file(image, "qcow2", "/etc/ck-one-runs", work).decode().split()
    two = read_guest_file(image, "qcow2", "/etc/ck-two-runs", work).decode().split()
    assert len(one) == 1 and len(two) == 1  # ran once, in the first build
    assert read_guest_file(image, "qcow2", "/etc/ck-three", work) == b"v2\n"
    # and the build user generalize removes is gone: generalize ran on the boot from the checkpoint
    passwd = read_guest_file(image, "qcow2", "/etc/passwd", work).decode()
    assert "baker build user" not in passwd


def test_the_manifest_records_the_chain_it_was_built_from(builds: dict):
    first = builds["full"]["manifest"]["checkpoints"]
    second = builds["resumed"]["manifest"]["checkpoints"]
    assert first["resumed_after"] == 0 and [s["index"] for s in first["saved"]] == [1, 2, 3]
    assert second["resumed_after"] == 2
    assert second["resumed_from"] == first["saved"][:2]  # the same layers, by key and sha256
    assert second["chain"][:3] == first["chain"][:3] and second["chain"][3] != first["chain"][3]
    assert [s["index"] for s in second["saved"]] == [3]
    statement = json.loads((builds["dir"] / "resumed" / "provenance.intoto.json").read_text())
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["checkpoints"]["resumed_from"] == second["resumed_from"]


def test_the_cache_holds_read_only_layers_and_no_build_leftovers(builds: dict):
    d: Path = builds["dir"]
    root = d / "cache" / "checkpoints"
    layers = sorted(root.glob("*.qcow2"))
    assert not [p for p in layers if p.name.startswith("work-")]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in layers)
    assert len([p for p in layers if not p.name.startswith("base-")]) == 4  # 1, 2, 3 (v1), 3 (v2)
    r, _, _ = baker(d, "cache", "list", "--checkpoints")
    assert r.returncode == 0 and "4 checkpoints" in r.stdout
    assert "after provision[3] shell (three)" in r.stdout
