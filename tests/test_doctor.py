"""`baker doctor`, `--accel`/BAKER_ACCEL, and CLI output into a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from baker.errors import BakerError
from baker.machine.accel import cache_file, choose_accelerator, mark_kvm_broken
from tests.helpers.paths import ROOT


def baker(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "baker", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_doctor_reports_every_check_as_json():
    p = baker("doctor", "--json", env={"BAKER_ACCEL": "tcg"})
    data = json.loads(p.stdout)
    names = [c["name"] for c in data["checks"]]
    for needed in ("qemu", "qemu-img", "accelerator", "uefi firmware", "cache dir", "work dir (TMPDIR)"):
        assert needed in names
    assert p.returncode == (0 if data["ok"] else 1)
    accel = next(c for c in data["checks"] if c["name"] == "accelerator")
    assert "BAKER_ACCEL=tcg" in accel["detail"]


def test_doctor_fails_when_qemu_is_missing():
    p = baker("doctor", "--qemu-binary", "/nonexistent/qemu-system-x86_64")
    assert p.returncode == 1
    assert "FAIL  qemu" in p.stdout
    assert "apt-get install qemu-system-x86" in p.stdout
    assert "cannot work" in p.stdout


def test_doctor_shows_a_recorded_kvm_failure_and_reprobe_forgets_it():
    qemu = "/nonexistent/qemu-for-doctor"
    mark_kvm_broken(qemu, "KVM internal error. Suberror: 1 (recorded by a test)")
    p = baker("doctor", "--json", "--qemu-binary", qemu)
    accel = next(c for c in json.loads(p.stdout)["checks"] if c["name"] == "accelerator")
    assert "recorded by a test" in accel["detail"]
    assert str(cache_file()) in accel["detail"] and "--reprobe" in accel["hint"]
    p = baker("doctor", "--json", "--reprobe", "--qemu-binary", qemu)
    accel = next(c for c in json.loads(p.stdout)["checks"] if c["name"] == "accelerator")
    assert "recorded by a test" not in accel["detail"]


def test_baker_accel_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv("BAKER_ACCEL", "tcg")
    assert choose_accelerator("kvm").accel == "tcg"
    monkeypatch.setenv("BAKER_ACCEL", "kvmm")
    with pytest.raises(BakerError, match="not an accelerator"):
        choose_accelerator("auto")


def test_build_help_documents_accel_and_baker_accel():
    p = baker("build", "--help")
    assert "--accel {auto,kvm,tcg}" in p.stdout
    assert "BAKER_ACCEL" in p.stdout


def test_output_into_a_closed_pipe_exits_quietly(tmp_path: Path):
    t = tmp_path / "t.yaml"
    many = "".join(f"  - {{type: shell, inline: ['echo {i}']}}\n" for i in range(400))
    t.write_text("name: pipe\nsource: {cloud_image: {url: /dev/null, checksum: none}}\n"
                 "provisioners:\n" + many)
    p = subprocess.run(f"set -o pipefail; {sys.executable} -m baker inspect {t} | head -1", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.stdout.startswith("# ")
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 141  # like any tool stopped by SIGPIPE
