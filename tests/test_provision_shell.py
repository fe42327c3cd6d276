"""shell provisioner: script assembly (pure) and end-to-end runs against a local sshd."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import baker.provision as provision
import baker.provision.shell as shell
from baker.communicator.ssh import SSHCommunicator
from baker.provision import ProvisionContext, ProvisionError, run_provisioner
from baker.provision.shell import (
    default_execute_command,
    inline_script,
    render_execute_command,
    vars_string,
)
from baker.template.model import ShellProvisioner
from tests.helpers.sshd import LocalSSHD, local_sshd, needs_sshd

# ---- pure assembly -----------------------------------------------------------------------------------


def test_inline_becomes_one_stop_at_first_failure_script() -> None:
    assert inline_script(["echo a", "false", "echo b"]) == "#!/bin/sh -e\necho a\nfalse\necho b\n"


def test_vars_are_shell_quoted() -> None:
    env = {"A": "two words", "B": "it's", "C": '$HOME "q"', "D": ""}
    assert vars_string(env) == "A='two words' B='it'\"'\"'s' C='$HOME \"q\"' D=''"


@pytest.mark.parametrize("template", [
    "{{ vars }} sh {{ path }}", "{{.Vars}} sh {{.Path}}", "{{ .Vars }} sh {{ .Path }}",
    "{{vars}} sh {{path}}",
])
def test_execute_command_placeholders(template: str) -> None:
    out = render_execute_command(template, "/tmp/my script.sh", {"X": "a b"})
    assert out == "X='a b' sh '/tmp/my script.sh'"


def test_default_execute_commands() -> None:
    assert default_execute_command(False) == "chmod +x {{ path }}; {{ vars }} {{ path }}"
    sudo = render_execute_command(default_execute_command(True), "/tmp/s", {"A": "1"})
    assert sudo == "chmod +x /tmp/s; sudo -n env A=1 /tmp/s"


# ---- against a local sshd ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSSHD]:
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def ctx(sshd: LocalSSHD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProvisionContext]:
    monkeypatch.setattr(provision, "RETRY_PAUSE", 0.1)
    monkeypatch.setattr(shell, "SETTLE_PAUSE", 0.2)
    monkeypatch.setattr(shell, "DISCONNECT_GRACE", 2.0)
    comm = sshd.communicator()
    comm.wait(20)
    (tmp_path / "template").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "remote").mkdir()
    yield ProvisionContext(comm=comm, log=logging.getLogger("test.prov"), template_dir=tmp_path / "template",
                           work_dir=tmp_path / "work", build_env={"BAKER_BUILD_NAME": "demo"},
                           reconnect_timeout=30, cancel=threading.Event(), index=3)
    comm.close()


def output(ctx: ProvisionContext) -> list[str]:
    assert isinstance(ctx.comm, SSHCommunicator)
    return [line.split(" ", 1)[1] for line in ctx.comm.last_output_tail if line.startswith("out:")]


@needs_sshd
def test_inline_env_and_build_env(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    value = "it's \"quoted\" $HOME `x` and spaces"
    p = ShellProvisioner(inline=['echo "v=$V"', 'echo "b=$BAKER_BUILD_NAME"', 'echo "u=$(id -un)"'],
                         environment={"V": value})
    with caplog.at_level(logging.INFO):
        run_provisioner(p, ctx)
    assert f"out: v={value}" in caplog.text
    assert "out: b=demo" in caplog.text
    assert "out: u=root" in caplog.text


@needs_sshd
@pytest.mark.parametrize("sudo", [True, False])
def test_env_survives_sudo(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture, sudo: bool) -> None:
    p = ShellProvisioner(inline=['echo "v=$V sudo=${SUDO_USER:-none}"'], environment={"V": "a b"}, sudo=sudo)
    with caplog.at_level(logging.INFO):
        run_provisioner(p, ctx)
    assert f"out: v=a b sudo={'root' if sudo else 'none'}" in caplog.text


@needs_sshd
def test_inline_stops_at_first_failure_and_names_the_provisioner(ctx: ProvisionContext) -> None:
    p = ShellProvisioner(name="break it", inline=["echo before", "false", "echo after"])
    with pytest.raises(ProvisionError) as e:
        run_provisioner(p, ctx)
    text = str(e.value)
    assert 'provisioner[3] shell "break it" (inline)' in text
    assert "exited with 1" in text and "before" in text and "after" not in text


@needs_sshd
def test_scripts_in_order_uploaded_to_remote_folder_and_removed(ctx: ProvisionContext,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    t = ctx.template_dir
    (t / "one.sh").write_text("#!/bin/sh\necho one $0\n")
    (t / "two.sh").write_text("echo two\n")  # no shebang: the shell runs it
    remote = ctx.work_dir.parent / "remote"
    p = ShellProvisioner(script="one.sh", scripts=[str(t / "two.sh")], remote_folder=str(remote))
    with caplog.at_level(logging.INFO):
        run_provisioner(p, ctx)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("out: ")]
    assert lines[0].startswith(f"out: one {remote}/baker-") and lines[1] == "out: two"
    assert list(remote.iterdir()) == []


@needs_sshd
def test_custom_execute_command_with_packer_placeholders(ctx: ProvisionContext,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    p = ShellProvisioner(inline=['echo "shell=$0 v=$V"'], environment={"V": "x y"},
                         execute_command="{{ .Vars }} /bin/bash {{.Path}}")
    with caplog.at_level(logging.INFO):
        run_provisioner(p, ctx)
    assert "v=x y" in caplog.text and "shell=/" in caplog.text


@needs_sshd
def test_valid_exit_codes(ctx: ProvisionContext) -> None:
    run_provisioner(ShellProvisioner(inline=["exit 7"], valid_exit_codes=[0, 7]), ctx)
    with pytest.raises(ProvisionError, match=r"exited with 3 \(valid: 0, 7\)"):
        run_provisioner(ShellProvisioner(inline=["exit 3"], valid_exit_codes=[0, 7]), ctx)


@needs_sshd
def test_max_retries_reruns_the_whole_provisioner(ctx: ProvisionContext,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    marker = ctx.work_dir / "count"
    p = ShellProvisioner(inline=[f"echo x >> {marker}", f'[ "$(wc -l < {marker})" -ge 3 ]'], max_retries=2)
    with caplog.at_level(logging.WARNING):
        run_provisioner(p, ctx)
    assert marker.read_text().count("x") == 3
    assert "attempt 1 of 3" in caplog.text and "attempt 2 of 3" in caplog.text
    marker.unlink()
    with pytest.raises(ProvisionError):
        run_provisioner(ShellProvisioner(inline=[f"echo x >> {marker}", "exit 1"], max_retries=1), ctx)
    assert marker.read_text().count("x") == 2


@needs_sshd
def test_timeout(ctx: ProvisionContext) -> None:
    with pytest.raises(ProvisionError, match=r"timed out after 1\.5s"):
        run_provisioner(ShellProvisioner(inline=["echo started", "sleep 30"], timeout="1.5s"), ctx)
    assert ctx.comm is not None and ctx.comm.run("true") == 0


KILL_MY_SSHD = (
    'pid=$$; while [ "$pid" -gt 1 ]; do '
    'case "$(ps -o comm= -p "$pid")" in sshd*) kill -KILL "$pid"; sleep 5; exit 0;; esac; '
    'pid=$(ps -o ppid= -p "$pid" | tr -d " "); done; echo "no sshd ancestor"; exit 1'
)


@needs_sshd
def test_expect_disconnect_reconnects(ctx: ProvisionContext) -> None:
    run_provisioner(ShellProvisioner(inline=[KILL_MY_SSHD], expect_disconnect=True), ctx)
    assert ctx.comm is not None and ctx.comm.connected
    run_provisioner(ShellProvisioner(inline=["echo next"]), ctx)


@needs_sshd
def test_unexpected_disconnect_fails_with_hint(ctx: ProvisionContext) -> None:
    with pytest.raises(ProvisionError) as e:
        run_provisioner(ShellProvisioner(inline=[KILL_MY_SSHD]), ctx)
    assert "connection dropped" in str(e.value) and "expect_disconnect" in (e.value.hint or "")


@needs_sshd
def test_expect_disconnect_without_disconnect_is_fine(ctx: ProvisionContext) -> None:
    run_provisioner(ShellProvisioner(inline=["true"], expect_disconnect=True), ctx)


@needs_sshd
def test_missing_script_and_bad_env_name(ctx: ProvisionContext) -> None:
    with pytest.raises(ProvisionError, match="cannot read script"):
        run_provisioner(ShellProvisioner(script="nope.sh"), ctx)
    with pytest.raises(ProvisionError, match="invalid environment variable name"):
        run_provisioner(ShellProvisioner(inline=["true"], environment={"1X": "y"}), ctx)
