"""Several builds in one run, for real: one template with two named builds from the base image, run
with -j 2, one failing in its shell provisioner. One run, shared by every assertion.

The failing build does not stop or corrupt the other: the good image is complete and boots-checkable
(qemu-img check), the bad one leaves nothing at its output; --json parses line by line with a build
name on every event; the summary and the exit code name the failure; --log-file and --deps-file
hold every build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baker.events import event_problems
from tests.helpers.faults import qemu_pids_for
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

GOOD, BAD = "mb-good", "mb-bad"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, base_image: Path) -> dict:
    root = tmp_path_factory.mktemp("multi")
    (root / "base.sums").write_text(Path(f"{base_image}.sha256").read_text())
    # {{ name }} is the build's full name: the same provisioner fails in one build only
    (root / "mb.yaml").write_text(f"""\
name: mb
source:
  cloud_image: {{url: '{base_image}', checksum: 'file:base.sums'}}
machine: {{accelerator: tcg, cpus: 1, memory: 768, disk_size: 3G}}
provisioners:
  - type: shell
    inline:
      - 'echo "{{{{ name }}}}" > /etc/mb-marker'
      - 'case "{{{{ name }}}}" in *-bad) echo "failing on purpose" >&2; exit 3;; esac'
exports: [{{type: qcow2}}]
builds:
  - name: good
  - name: bad
    version: "2.0"
""")
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "baker", "build", "mb.yaml", "-j", "2", "--json", "--no-store",
                        "--log-file", "run.log", "--deps-file", "images/mb.d"],
                       cwd=root, capture_output=True, text=True, timeout=1500,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.monotonic() - started
    print(f"\nbaker build -j 2, two builds (one failing in provisioning): {took:.1f}s")
    return {"root": root, "r": r, "events": [json.loads(line) for line in r.stdout.splitlines()]}


def test_one_failing_build_leaves_the_other_image_intact(run: dict):
    root, r = run["root"], run["r"]
    assert r.returncode == 1, r.stderr[-3000:]
    good = root / "images" / GOOD
    subprocess.run(["qemu-img", "check", str(good / f"{GOOD}.qcow2")], check=True, capture_output=True)
    manifest = json.loads((good / "manifest.json").read_text())
    assert manifest["name"] == GOOD
    assert not (root / "images" / BAD).exists()  # nothing half-written at the failed build's output
    assert not qemu_pids_for(GOOD) and not qemu_pids_for(BAD)


def test_every_json_line_is_an_event_of_a_named_build(run: dict):
    events = run["events"]
    assert events and all(not event_problems(e) for e in events), [event_problems(e) for e in events]
    assert {e["build"] for e in events} == {GOOD, BAD}
    kinds = {b: [e["event"] for e in events if e["build"] == b] for b in (GOOD, BAD)}
    assert kinds[GOOD][-1] == "build_done" and "build_failed" not in kinds[GOOD]
    failed = next(e for e in events if e["event"] == "build_failed")
    assert failed["build"] == BAD and failed["step"].startswith("provision[1] shell")
    assert failed["exit_code"] == 1
    assert "failing on purpose" in json.dumps(failed)


def test_the_summary_names_the_failure(run: dict):
    err = run["r"].stderr
    assert "1 of 2 builds succeeded; failed: mb-bad" in err
    row = next(line for line in err.splitlines() if line.startswith(BAD))
    assert "FAILED" in row and "provision[1]" in row
    row = next(line for line in err.splitlines() if line.startswith(GOOD))
    assert " ok " in row and "MiB" in row


def test_the_log_file_and_the_deps_file_hold_the_builds(run: dict):
    root = run["root"]
    log = (root / "run.log").read_text()
    assert "\x1b" not in log
    assert f" {GOOD}: build '{GOOD}' finished" in log and f" {BAD}: ERROR: build failed" in log
    rule = (root / "images" / "mb.d").read_text()  # the good build's rule; the bad one wrote none
    assert f"images/{GOOD}/{GOOD}.qcow2" in rule and BAD not in rule
