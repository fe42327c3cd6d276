"""The README's command lines work as written, from a plain shell, after `make demo`.

A newcomer copies those lines first. Each `baker …` line of the README's shell blocks runs here
exactly as written (cwd = the repository, `.venv/bin` on PATH, none of the Makefile's variables set,
the user's real cache so `base_image('debian-12')` finds what `make base-image` built). Lines that
bake run as `baker validate` with the same template and variables (the bake itself is the e2e
build test); lines that delete things run against an empty cache.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from baker.cli import parser
from tests.helpers.paths import ROOT

README = ROOT / "README.md"
WITH_VALUE = {"--accel", "--on-error", "-on-error", "--timeout", "--export-jobs", "--output-dir", "-o",
              "--deps-file", "-j", "--jobs", "--only", "-only", "--except", "-except", "--log-file"}
BUILD_ONLY_FLAGS = {"--json", "--plain", "--verbose", "-v", "--keep-workdir", "--if-changed", "--force",
                    "--wait-lock", "--with-children", "--apt-cache", "--checkpoint", "--no-checkpoints",
                    *WITH_VALUE}


def readme_commands() -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", raw)[0].strip()
            if line.startswith("baker "):
                lines.append(" ".join(line.split()))
    return lines


def plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BAKER_BASE", "BAKER_CACHE_DIR", "BAKER_VAR_", "BAKER_ACCEL"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def as_validate(argv: list[str]) -> list[str]:
    """`baker build T -var x=y --json` → `baker validate T -var x=y`."""
    out, skip = ["baker", "validate"], False
    for a in argv[2:]:
        if skip:
            skip = False
            continue
        if a in BUILD_ONLY_FLAGS:
            skip = a in WITH_VALUE
            continue
        out.append(a)
    return out


def test_the_readme_shows_the_commands_a_newcomer_needs():
    cmds = readme_commands()
    assert any(c.startswith("baker validate templates/debian-12-nginx.yaml") for c in cmds)
    assert any(c.startswith("baker build templates/debian-12-nginx.yaml -var nginx_port=8080") for c in cmds)
    assert any(c.startswith("baker doctor") for c in cmds)


@pytest.mark.parametrize("argv", [shlex.split(c) for c in readme_commands()], ids=readme_commands())
def test_every_readme_command_parses(argv: list[str]):
    parser().parse_args(argv[1:])  # argparse exits (SystemExit) on a flag the README invented


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_command_runs_from_a_plain_shell(line: str, tmp_path: Path, base_image: Path):
    argv = shlex.split(line)
    env = plain_env()
    if argv[1] == "build" and "https://" in line:
        pytest.skip("needs internet access to Debian's cloud images")
    if argv[1] == "build":
        argv = as_validate(argv)
    if argv[1:3] == ["cache", "prune"] or argv[1:3] == ["cache", "list"]:
        env["BAKER_CACHE_DIR"] = str(tmp_path / "cache")  # never prune the user's real cache
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    ok = {0, 1} if argv[1] == "doctor" else {0}  # doctor exits 1 only where builds cannot work
    assert proc.returncode in ok, f"{shlex.join(argv)}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
