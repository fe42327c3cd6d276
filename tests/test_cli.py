"""The command line as users and Makefiles meet it: exit codes, file:line:col errors, cache commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def baker(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "baker", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_version_and_help():
    assert baker("--version").stdout.startswith("baker ")
    for cmd in ("build", "validate", "inspect", "cache", "import"):
        assert baker(cmd, "--help").returncode == 0


def test_validate_ok_and_inspect_lists_steps(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"")
    env = {"BAKER_BASE_IMAGE": str(base)}
    r = baker("validate", "templates/debian-12-nginx.yaml", env=env)
    assert r.returncode == 0, r.stderr
    r = baker("inspect", "templates/debian-12-nginx.yaml", "--json", "-var", "nginx_port=81", env=env)
    data = json.loads(r.stdout)
    assert data["template"]["values"]["nginx_port"] == 81
    assert data["steps"][0] == "prepare" and data["steps"][-2:] == ["publish", "store"]
    assert "provision[2] shell (install nginx)" in data["steps"]


def test_yaml_syntax_error_exits_2_with_position(tmp_path: Path):
    t = tmp_path / "bad.yaml"
    t.write_text("name: x\nsource:\n  cloud_image: {url: a\n")
    r = baker("validate", str(t))
    assert r.returncode == 2
    assert f"{t}:" in r.stderr and "Traceback" not in r.stderr


def test_unknown_key_names_path_and_suggests(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text("name: x\nsource: {cloud_image: {url: /dev/null}}\nmachine:\n  cpuss: 2\n")
    r = baker("validate", str(t))
    assert r.returncode == 2
    assert f"{t}:4:3" in r.stderr and "machine.cpuss" in r.stderr and "cpus" in r.stderr


def test_build_with_invalid_template_exits_2_before_any_work(tmp_path: Path):
    t = tmp_path / "t.yaml"
    t.write_text("name: x\nsource: {cloud_image: {url: /dev/null}}\nprovisioners:\n  - {type: shel}\n")
    r = baker("build", str(t), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "shell" in r.stderr
    assert not (tmp_path / "out").exists()


def test_undefined_cli_variable_is_an_error(tmp_path: Path):
    r = baker("validate", "templates/debian-12-nginx.yaml", "-var", "ngnix_port=8080",
              env={"BAKER_BASE_IMAGE": "/x.qcow2"})
    assert r.returncode == 2 and "nginx_port" in r.stderr


def test_cache_list_and_prune(tmp_path: Path):
    env = {"BAKER_CACHE_DIR": str(tmp_path)}
    r = baker("cache", "list", env=env)
    assert r.returncode == 0 and "0 files" in r.stdout
    r = baker("cache", "prune", "--older-than", "30d", env=env)
    assert r.returncode == 0 and "0 files removed" in r.stdout
