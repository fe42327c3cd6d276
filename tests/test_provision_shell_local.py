"""shell-local: real host execution, streaming, exit codes, timeout, retries, masking."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

import baker.provision as provision
from baker.provision import ProvisionContext, ProvisionError, run_provisioner
from baker.provision.base import ProvisionCancelled
from baker.secrets import MASK, MASKER
from baker.template.model import ShellLocalProvisioner


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProvisionContext:
    monkeypatch.setattr(provision, "RETRY_PAUSE", 0.05)
    (tmp_path / "t").mkdir()
    (tmp_path / "w").mkdir()
    return ProvisionContext(comm=None, log=logging.getLogger("test.local"), template_dir=tmp_path / "t",
                            work_dir=tmp_path / "w", build_env={"BAKER_BUILD_NAME": "demo"},
                            cancel=threading.Event(), index=0)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(("out: ", "err: "))]


def test_inline_env_cwd_and_streaming(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    p = ShellLocalProvisioner(inline=['echo "v=$V b=$BAKER_BUILD_NAME"', "pwd", "echo warn >&2"],
                              environment={"V": "a 'b' $c"})
    with caplog.at_level(logging.INFO):
        run_provisioner(p, ctx)
    # stdout and stderr are read by two threads: their relative order is not guaranteed
    want = ["out: v=a 'b' $c b=demo", f"out: {ctx.template_dir}", "err: warn"]
    assert sorted(lines(caplog)) == sorted(want)


def test_inline_stops_at_first_failure(ctx: ProvisionContext) -> None:
    with pytest.raises(ProvisionError) as e:
        run_provisioner(ShellLocalProvisioner(inline=["echo one", "false", "echo two"]), ctx)
    assert "provisioner[0] shell-local (inline)" in str(e.value)
    assert "out: one" in e.value.tail and "out: two" not in e.value.tail


def test_valid_exit_codes(ctx: ProvisionContext) -> None:
    run_provisioner(ShellLocalProvisioner(inline=["exit 5"], valid_exit_codes=[5]), ctx)
    with pytest.raises(ProvisionError, match="exited with 0"):
        run_provisioner(ShellLocalProvisioner(inline=["true"], valid_exit_codes=[5]), ctx)


def test_scripts_executable_or_not(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    a = ctx.template_dir / "a.py"
    a.write_text("#!/usr/bin/env python3\nprint('from python')\n")
    a.chmod(0o755)
    (ctx.template_dir / "b.sh").write_text("echo from sh $0\n")
    with caplog.at_level(logging.INFO):
        run_provisioner(ShellLocalProvisioner(scripts=["a.py", "b.sh"]), ctx)
    assert lines(caplog) == ["out: from python", f"out: from sh {ctx.template_dir / 'b.sh'}"]
    with pytest.raises(ProvisionError, match="does not exist"):
        run_provisioner(ShellLocalProvisioner(script="missing.sh"), ctx)


def test_timeout_kills_the_process_group(ctx: ProvisionContext) -> None:
    pidfile = ctx.work_dir / "child.pid"
    start = time.monotonic()
    with pytest.raises(ProvisionError, match="timed out"):
        run_provisioner(ShellLocalProvisioner(inline=[f"sleep 60 & echo $! > {pidfile}", "wait"],
                                              timeout="1s"), ctx)
    assert time.monotonic() - start < 6
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_max_retries(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    count = ctx.work_dir / "n"
    p = ShellLocalProvisioner(inline=[f"echo x >> {count}", f'[ "$(wc -l < {count})" -ge 2 ]'], max_retries=3)
    with caplog.at_level(logging.WARNING):
        run_provisioner(p, ctx)
    assert count.read_text().count("x") == 2
    assert "attempt 1 of 4" in caplog.text


def test_secrets_are_masked(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    MASKER.add("tops3cret")
    try:
        with caplog.at_level(logging.DEBUG):
            p = ShellLocalProvisioner(inline=["echo pw=$PW"], environment={"PW": "tops3cret"})
            run_provisioner(p, ctx)
        assert "tops3cret" not in caplog.text
        assert f"out: pw={MASK}" in caplog.text
    finally:
        MASKER.clear()


def test_cancel_stops_a_running_command(ctx: ProvisionContext) -> None:
    threading.Timer(0.5, ctx.cancel.set).start()
    start = time.monotonic()
    with pytest.raises(ProvisionCancelled):
        run_provisioner(ShellLocalProvisioner(inline=["sleep 60"]), ctx)
    assert time.monotonic() - start < 6


def test_pause_before_honours_cancel(ctx: ProvisionContext) -> None:
    ctx.cancel.set()
    with pytest.raises(ProvisionCancelled):
        run_provisioner(ShellLocalProvisioner(inline=["true"], pause_before="30s"), ctx)


def test_script_globs_expand_sorted(ctx: ProvisionContext, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("20-b.sh", "10-a.sh"):
        (ctx.template_dir / name).write_text(f"echo {name}\n")
    with caplog.at_level(logging.INFO):
        run_provisioner(ShellLocalProvisioner(scripts=[str(ctx.template_dir / "*.sh")]), ctx)
    assert lines(caplog) == ["out: 10-a.sh", "out: 20-b.sh"]


def test_missing_interpreter_names_the_script(ctx: ProvisionContext,
                                              caplog: pytest.LogCaptureFixture) -> None:
    script = ctx.template_dir / "odd.sh"
    script.write_text("#!/nonexistent/interpreter\necho hi\n")
    script.chmod(0o755)
    with caplog.at_level(logging.DEBUG, logger="baker.proc"), pytest.raises(ProvisionError) as e:
        run_provisioner(ShellLocalProvisioner(script=str(script)), ctx)
    assert f"cannot run {script}: No such file or directory" in str(e.value)
    assert any(r.name == "baker.proc" and str(script) in r.getMessage() for r in caplog.records)
