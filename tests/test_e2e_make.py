"""The nightly pattern for real: the repository's Makefile (`make images`) over two templates that boot
the base image, share one script and each have their own.

One module, three real builds in all: `make -j2 images` (both), then a changed script rebuilds only
its image while, in the same `make -j2 -k` run, a changed base checksum fails the other one early.
Timings are printed (run with -s) for the closing notes, never asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baker.errors import EXIT_LOCKED
from baker.incremental.lock import lock_path
from tests.helpers.faults import qemu_pids_for
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.e2e

NAMES = ("mk-alpha", "mk-beta")


def _template(d: Path, name: str, base: Path) -> Path:
    (d / f"{name}.sums").write_text(Path(f"{base}.sha256").read_text())
    (d / f"{name}.sh").write_text(f"echo {name} > /etc/{name}-marker\n")
    t = d / f"{name}.yaml"
    t.write_text(f"""\
name: {name}
version: "1.0.{{{{ timestamp() }}}}"
source:
  cloud_image: {{url: '{base}', checksum: 'file:{name}.sums'}}
machine: {{accelerator: tcg, cpus: 1, memory: 768, disk_size: 3G}}
provisioners:
  - {{type: shell, script: shared.sh}}
  - {{type: shell, script: {name}.sh}}
exports: [{{type: qcow2}}]
""")
    return t


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base_image: Path) -> Path:
    root = tmp_path_factory.mktemp("make-images")
    tdir = root / "templates"
    tdir.mkdir()
    (tdir / "shared.sh").write_text("echo shared > /etc/shared-marker\n")
    for n in NAMES:
        _template(tdir, n, base_image)
    return root


def make(project: Path, *args: str, timeout: float = 1500) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "BAKER_STORE": str(project / "store")}
    started = time.monotonic()
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args,
                        f"TEMPLATE_DIR={project / 'templates'}", f"IMAGES_DIR={project / 'images'}"],
                       capture_output=True, text=True, env=env, timeout=timeout)
    return r, time.monotonic() - started


def manifest(project: Path, name: str) -> dict:
    return json.loads((project / "images" / name / "manifest.json").read_text())


@pytest.fixture(scope="module")
def first_run(project: Path) -> float:
    r, took = make(project, "-j2", "images")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"\nmake -j2 images, two templates from zero: {took:.1f}s")
    return took


def test_make_j2_images_bakes_both_and_writes_their_rules(project: Path, first_run: float):
    for n in NAMES:
        m = manifest(project, n)
        assert m["inputs"]["fingerprint"] and not m["inputs"].get("unknown")
        assert (project / "images" / n / f"{n}.qcow2").exists()
        rule = (project / "images" / f"{n}.d").read_text()
        assert "shared.sh" in rule and f"{n}.sh" in rule and f"{n}.sums" in rule
        assert rule.partition(":")[0].split()[-1].endswith(f"{n}/manifest.json")


def test_a_second_make_images_does_no_work(project: Path, first_run: float):
    before = {n: manifest(project, n)["built_at"] for n in NAMES}
    r, took = make(project, "images")
    assert r.returncode == 0 and "baker build" not in r.stdout, r.stdout
    print(f"\nsecond make images (nothing changed): {took:.2f}s")
    r, took = make(project, "images", "NIGHTLY=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("up to date") == 2, r.stdout
    print(f"make images NIGHTLY=1 (baker checks both, nothing changed): {took:.2f}s")
    assert {n: manifest(project, n)["built_at"] for n in NAMES} == before


def test_a_changed_script_rebuilds_only_its_image_and_a_failing_one_spares_the_other(project: Path,
                                                                                   first_run: float):
    alpha, beta = NAMES
    tdir = project / "templates"
    old_alpha = manifest(project, alpha)
    time.sleep(1.1)
    (tdir / f"{beta}.sh").write_text(f"echo {beta} v2 > /etc/{beta}-marker\n")
    dry, _ = make(project, "-n", "images")
    assert f"{beta}.yaml" in dry.stdout and f"{alpha}.yaml" not in dry.stdout, dry.stdout
    # a new upstream base for alpha: its SUMS file names another digest (the image is the same, so
    # the rebuild fails verifying it — a night with one failure)
    sums = tdir / f"{alpha}.sums"
    sums.write_text("0" * 64 + sums.read_text()[64:])
    r, took = make(project, "-k", "-j2", "images", "NIGHTLY=1")
    print(f"\nmake -k -j2 images NIGHTLY=1 (one rebuild, one failure): {took:.1f}s")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert f"{alpha}: rebuilding: changed base image" in out
    assert "fetch-source" in out  # the failing step, as the journal would show it
    assert f"{beta}: rebuilding: changed script" in out and f"{beta}.sh" in out
    assert manifest(project, alpha) == old_alpha  # the failed build left the last good image alone
    assert (project / "images" / alpha / f"{alpha}.qcow2").stat().st_size == \
        old_alpha["artifacts"][0]["size"]
    new_beta = project / "images" / beta / f"{beta}.qcow2"
    subprocess.run(["qemu-img", "check", str(new_beta)], check=True, capture_output=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(new_beta)],
                                     check=True, capture_output=True, text=True).stdout)
    assert "backing-filename" not in info
    assert not qemu_pids_for(alpha) and not qemu_pids_for(beta)


def test_two_builds_of_one_output_at_once_the_second_fails_fast(project: Path, first_run: float):
    beta = NAMES[1]
    out = project / "images" / beta
    before = manifest(project, beta)
    env = {**os.environ, "BAKER_STORE": str(project / "store")}
    cmd = [sys.executable, "-m", "baker", "build", str(project / "templates" / f"{beta}.yaml"),
           "-o", str(out), "--plain"]
    first = subprocess.Popen([*cmd, "--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                holder = json.loads(lock_path(out).read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == first.pid and not holder.get("released"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first build never took the lock")
        started = time.monotonic()
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        took = time.monotonic() - started
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    print(f"\nsecond build of a locked output failed in {took:.2f}s")
    assert second.returncode == EXIT_LOCKED
    assert f"pid {first.pid}" in second.stdout + second.stderr
    assert first.returncode == 143
    assert manifest(project, beta) == before
    assert not qemu_pids_for(beta)
