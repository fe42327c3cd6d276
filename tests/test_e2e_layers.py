"""Layered images for real: a golden template and an app on it, booted from the base image.

Four builds in all: building the app builds the stale golden first (2), a second run builds nothing,
then a changed golden script and `--with-children` rebuild both (2). The app's provisioner fails
unless the golden's marker is in its guest, so a passing build proves it booted the parent's image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e


def baker(*args: str, store: Path) -> tuple[subprocess.CompletedProcess[str], list[dict], float]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "baker", *args, "--json"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "BAKER_STORE": str(store)}, timeout=1500)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r, events, time.monotonic() - started


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory, base_image: Path) -> Path:
    d = tmp_path_factory.mktemp("layers")
    (d / "golden.sh").write_text("echo golden v1 > /etc/golden-marker\n")
    (d / "golden.yaml").write_text(f"""\
name: lay-golden
version: "1.0.{{{{ timestamp() }}}}"
source:
  cloud_image: {{url: '{base_image}', checksum: 'file:{base_image}.sha256'}}
machine: {{accelerator: tcg, cpus: 1, memory: 768, disk_size: 3G}}
provisioners:
  - {{type: shell, script: golden.sh}}
exports: [{{type: qcow2}}]
""")
    (d / "app.yaml").write_text("""\
name: lay-app
version: "1.0.{{ timestamp() }}"
source:
  image: golden.yaml
machine: {accelerator: tcg, cpus: 1, memory: 768}
provisioners:
  - {type: shell, inline: ["cat /etc/golden-marker", "grep -q golden /etc/golden-marker",
                           "echo app > /etc/app-marker"]}
exports: [{type: qcow2, compress: true}]
""")
    return d


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def first(layers: Path) -> tuple[list[dict], float]:
    r, events, took = baker("build", str(layers / "app.yaml"), "-o", str(layers / "images" / "lay-app"),
                            store=layers / "store")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    print(f"\nlayer from zero (golden, then app): {took:.1f}s")
    return events, took


def test_building_a_layer_builds_its_stale_parent_first_and_records_it(layers: Path, first):
    events, _ = first
    starts = [e["name"] for e in events if e["event"] == "build_start"]
    assert starts == ["lay-golden", "lay-app"]
    app = manifest(layers / "images" / "lay-app")
    golden = manifest(layers / "images" / "lay-golden")
    assert app["source"]["parent"] == {"name": "lay-golden", "version": golden["version"]}
    assert app["source"]["sha256"] == golden["artifacts"][0]["sha256"]
    from baker.store import Store

    s = Store(layers / "store")
    try:
        v = s.latest("lay-app")
        assert v is not None and (v.parent_name, v.parent_version) == ("lay-golden", golden["version"])
    finally:
        s.close()
    image = layers / "images" / "lay-app" / "lay-app.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, text=True).stdout)
    assert "backing-filename" not in info and "full-backing-filename" not in info  # flattened


def test_nothing_changed_nothing_built(layers: Path, first):
    r, events, took = baker("build", str(layers / "app.yaml"), "-o", str(layers / "images" / "lay-app"),
                            "--if-changed", store=layers / "store")
    assert r.returncode == 0, r.stderr
    kinds = [e["event"] for e in events if e["event"].startswith("build_")]
    assert kinds == ["build_skipped", "build_skipped"]
    print(f"\nlayer, nothing changed: {took:.2f}s")


def test_a_changed_parent_rebuilds_its_children(layers: Path, first):
    before = manifest(layers / "images" / "lay-app")
    (layers / "golden.sh").write_text("echo golden v2 > /etc/golden-marker\n")
    r, events, took = baker("build", str(layers / "golden.yaml"), "-o", str(layers / "images" / "lay-golden"),
                            "--with-children", store=layers / "store")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    print(f"\ngolden changed, --with-children: {took:.1f}s")
    reasons = [e["reason"] for e in events if e["event"] == "build_reason"]
    assert reasons and "lay-app: rebuilding: changed base image" in reasons[-1]
    after = manifest(layers / "images" / "lay-app")
    golden = manifest(layers / "images" / "lay-golden")
    assert after["built_at"] != before["built_at"] or after["version"] != before["version"]
    assert after["source"]["parent"]["version"] == golden["version"]
    assert "golden v2" in "".join(e.get("message", "") for e in events if e["event"] == "log")
