"""generalize_command and the shipped provisioner scripts (syntax, flags, cloud-init status handling)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from baker.provision.generalize import generalize_command, generalize_env, shipped_script
from baker.template.model import GeneralizeConfig, MinimizeConfig

SHIPPED = ["generalize.sh", "wait-cloud-init.sh", "apt-upgrade.sh"]
STUB = 'echo "user=$BAKER_GEN_USER trim=$BAKER_GEN_FSTRIM mid=$BAKER_GEN_MACHINE_ID off=$BAKER_GEN_POWEROFF"'


def sh(command: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, **kw)


def test_env_follows_the_config() -> None:
    env = generalize_env(GeneralizeConfig(fstrim=False, remove_build_user=False), "baker", "poweroff")
    assert env["BAKER_GEN_FSTRIM"] == "0" and env["BAKER_GEN_REMOVE_USER"] == "0"
    assert env["BAKER_GEN_MACHINE_ID"] == "1" and env["BAKER_GEN_USER"] == "baker"
    assert generalize_env(GeneralizeConfig(), "u", None)["BAKER_GEN_POWEROFF"] == ""


def test_command_passes_env_and_runs_the_script_as_root() -> None:
    cmd = generalize_command(GeneralizeConfig(fstrim=False), "build user", poweroff_command="echo 'off now'",
                             script=STUB)
    out = sh(cmd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "user=build user trim=0 mid=1 off=echo 'off now'"


def test_command_uses_sudo_when_not_root() -> None:
    cmd = generalize_command(GeneralizeConfig(), "baker", script=STUB)
    assert "set -- sudo -n" in cmd and '"$@" env ' in cmd
    assert cmd.rstrip().endswith("baker-generalize")


def test_default_command_embeds_the_shipped_script() -> None:
    cmd = generalize_command(GeneralizeConfig(), "baker")
    assert "userdel -f -r" in cmd and "cloud-init clean --logs --seed" in cmd


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scripts_parse(name: str) -> None:
    path = shipped_script(name)
    assert path.stat().st_mode & 0o111, f"{name} should be executable"
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


def test_real_generalize_with_every_step_off_only_powers_off() -> None:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("generalize.sh refuses to run as non-root")
    # minimize.apt would clean this host's apt: every step off must touch nothing
    cfg = GeneralizeConfig(cloud_init_clean=False, machine_id=False, ssh_host_keys=False, logs=False,
                           fstrim=False, remove_build_user=True, minimize=MinimizeConfig(apt=False))
    # remove_build_user with user root is a no-op by design: root is never removed
    out = sh(generalize_command(cfg, "root", poweroff_command="echo POWEROFF-CALLED"))
    assert out.returncode == 0, out.stderr
    assert "no build user to remove" in out.stdout
    assert out.stdout.strip().endswith("POWEROFF-CALLED")


@pytest.mark.parametrize(("status", "rc", "strict", "want_rc", "want"), [
    ("done", 0, "0", 0, "status: done"),
    ("disabled", 0, "0", 0, "status: disabled"),
    ("degraded done", 2, "0", 0, "recoverable errors"),
    ("error", 1, "0", 0, "continuing"),
    ("error", 1, "1", 1, "reported errors"),
])
def test_wait_cloud_init_status_handling(tmp_path: Path, status: str, rc: int, strict: str, want_rc: int,
                                         want: str) -> None:
    fake = tmp_path / "cloud-init"
    fake.write_text(f'#!/bin/sh\necho "status: {status}"\nexit {rc}\n')
    fake.chmod(0o755)
    out = subprocess.run(["sh", str(shipped_script("wait-cloud-init.sh"))], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "BAKER_CLOUD_INIT_STRICT": strict,
                              "BAKER_CLOUD_INIT_RESULT": str(tmp_path / "none.json")},
                         timeout=30)
    assert out.returncode == want_rc, out.stdout + out.stderr
    assert want in out.stdout + out.stderr


def test_wait_cloud_init_without_cloud_init(tmp_path: Path) -> None:
    out = subprocess.run(["/bin/sh", str(shipped_script("wait-cloud-init.sh"))], capture_output=True,
                         text=True, env={"PATH": str(tmp_path)}, timeout=30)
    assert out.returncode == 0 and "not installed" in out.stdout


def test_minimize_reaches_the_script_as_flags() -> None:
    env = generalize_env(GeneralizeConfig(), "baker", "poweroff")
    assert (env["BAKER_GEN_MIN_APT"], env["BAKER_GEN_MIN_DOCS"], env["BAKER_GEN_MIN_MAN"]) == ("1", "0", "0")
    assert env["BAKER_GEN_MIN_LOCALES"] == ""
    env = generalize_env(GeneralizeConfig(minimize=MinimizeConfig(apt=False, docs=True, man=True,
                                                                  locales=["en", "de"])), "baker", None)
    assert (env["BAKER_GEN_MIN_APT"], env["BAKER_GEN_MIN_DOCS"], env["BAKER_GEN_MIN_MAN"]) == ("0", "1", "1")
    assert env["BAKER_GEN_MIN_LOCALES"] == "en de"


@pytest.mark.parametrize(("result", "asks"), [
    ('{\n "v1": {\n  "datasource": "DataSourceNoCloud",\n  "errors": []\n }\n}\n', False),
    ('{"v1": {"errors": [], "recoverable_errors": {}}}', False),
    ('{\n "v1": {\n  "errors": [\n   "cc_ntp failed"\n  ]\n }\n}\n', True),
    ('{\n "v1": {\n  "errors": [],\n  "recoverable_errors": {\n   "WARNING": ["x"]\n  }\n }\n}\n', True),
])
def test_wait_cloud_init_reads_result_json_before_starting_cloud_init(tmp_path: Path, result: str,
                                                                      asks: bool) -> None:
    """A finished boot without errors needs no `cloud-init status` (a Python start of seconds under TCG);
    errors of either kind still go through it, so they are reported as before."""
    (tmp_path / "result.json").write_text(result)
    fake = tmp_path / "cloud-init"
    fake.write_text(f'#!/bin/sh\ntouch {tmp_path}/asked\necho "status: done"\n')
    fake.chmod(0o755)
    out = subprocess.run(["sh", str(shipped_script("wait-cloud-init.sh"))], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin",
                              "BAKER_CLOUD_INIT_RESULT": str(tmp_path / "result.json")}, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "asked").exists() == asks
    assert "status: done" in out.stdout
