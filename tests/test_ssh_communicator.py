"""SSHCommunicator against a real local sshd: connect loop, host key pinning, streaming, files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from baker.communicator.ssh import (
    CommandTimeout,
    GuestGone,
    HostKeyMismatch,
    SSHAuthFailed,
    SSHCommunicator,
    SSHDisconnected,
    SSHTimeout,
    env_prefix,
)
from baker.keys import generate_build_keys
from baker.secrets import MASK, MASKER
from tests.helpers.sshd import FakeSlirp, LocalSSHD, free_port, kill_quietly, local_sshd, needs_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSSHD]:
    with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def comm(sshd: LocalSSHD) -> Iterator[SSHCommunicator]:
    c = sshd.communicator()
    c.wait(20)
    yield c
    c.close()


# ---- wait() ------------------------------------------------------------------------------------------


def test_wait_times_out_when_nothing_listens(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    c = SSHCommunicator(port=free_port(), username="root", key_path=keys.client_private_path,
                        host_public=keys.host_public)
    start = time.monotonic()
    with pytest.raises(SSHTimeout) as e:
        c.wait(2.5)
    assert time.monotonic() - start < 6
    assert "refused" in e.value.last_error.lower()


def test_wait_retries_quietly_through_a_slirp_style_listener(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    fake = FakeSlirp()
    try:
        c = SSHCommunicator(port=fake.port, username="root", key_path=keys.client_private_path,
                            host_public=keys.host_public)
        with pytest.raises(SSHTimeout) as e:
            c.wait(3)
        assert fake.accepted >= 2
        assert "banner" in e.value.last_error.lower() or "eof" in e.value.last_error.lower()
    finally:
        fake.close()


def test_wait_fails_fast_when_the_vm_dies(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    fake = FakeSlirp()
    calls = []

    def alive() -> str | None:
        calls.append(1)
        return "qemu exited with status 1" if len(calls) > 2 else None

    try:
        c = SSHCommunicator(port=fake.port, username="root", key_path=keys.client_private_path,
                            host_public=keys.host_public)
        start = time.monotonic()
        with pytest.raises(GuestGone, match="qemu exited with status 1"):
            c.wait(120, alive=alive)
        assert time.monotonic() - start < 10
    finally:
        fake.close()


@needs_sshd
def test_wait_then_connects_once_sshd_appears(tmp_path: Path) -> None:
    port = free_port()
    server = LocalSSHD(dir=tmp_path, port=port, keys=generate_build_keys(tmp_path / "k"))
    c = server.communicator()
    import threading

    timer = threading.Timer(2.0, server.start)
    timer.start()
    try:
        c.wait(30)
        assert c.run("true") == 0
    finally:
        timer.join()
        c.close()
        server.stop()


@needs_sshd
def test_host_key_mismatch_is_refused_with_both_fingerprints(sshd: LocalSSHD, tmp_path: Path) -> None:
    other = generate_build_keys(tmp_path)
    c = sshd.communicator(host_public=other.host_public)
    c.retry_pause = 0.2
    start = time.monotonic()
    with pytest.raises(HostKeyMismatch) as e:
        c.wait(60)
    assert time.monotonic() - start < 15
    assert other.fingerprint() in str(e.value)
    assert sshd.keys.fingerprint() in str(e.value)


@needs_sshd
def test_host_key_check_off_accepts_and_warns(sshd: LocalSSHD, caplog: pytest.LogCaptureFixture) -> None:
    c = sshd.communicator(host_public=None)
    with caplog.at_level(logging.WARNING), c:
        c.wait(20)
        assert c.run("true") == 0
    assert "host key checking is off" in caplog.text


@needs_sshd
def test_wrong_client_key_counts_handshake_attempts(sshd: LocalSSHD, tmp_path: Path) -> None:
    other = generate_build_keys(tmp_path)
    c = sshd.communicator(key_path=other.client_private_path)
    c.retry_pause = 0.1
    with pytest.raises(SSHAuthFailed, match="refused root 2 times"):
        c.wait(60, handshake_attempts=2)


# ---- run() -------------------------------------------------------------------------------------------


@needs_sshd
def test_run_streams_lines_live_and_returns_status(comm: SSHCommunicator) -> None:
    out: list[tuple[float, str]] = []
    err: list[str] = []
    start = time.monotonic()
    rc = comm.run("echo first; echo oops >&2; sleep 2; printf 'last-no-newline'; exit 3",
                  stdout_cb=lambda line: out.append((time.monotonic() - start, line)), stderr_cb=err.append)
    end = time.monotonic() - start
    assert rc == 3
    assert [line for _, line in out] == ["first", "last-no-newline"]
    assert err == ["oops"]
    assert out[0][0] < end - 1.5, "first line must arrive while the command still runs"
    assert comm.last_output_tail == ["out: first", "err: oops", "out: last-no-newline"]


@needs_sshd
def test_run_default_logging_and_tail_limit(comm: SSHCommunicator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.ssh"):
        assert comm.run("seq 1 120") == 0
    assert "out: 1" in caplog.text and "out: 120" in caplog.text
    assert len(comm.last_output_tail) == 50
    assert comm.last_output_tail[-1] == "out: 120"


@needs_sshd
def test_run_env_values_are_quoted(comm: SSHCommunicator) -> None:
    value = "it's a \"quoted\" $HOME `id` value; with spaces\nand a newline"
    out: list[str] = []
    assert comm.run('printf "%s|" "$A"; echo "$B"', env={"A": value, "B": ""}, stdout_cb=out.append) == 0
    assert "\n".join(out) == value + "|"


def test_env_prefix_rejects_bad_names() -> None:
    with pytest.raises(Exception, match="invalid environment variable name"):
        env_prefix({"A-B": "x"})
    assert env_prefix({"A": "x y"}) == "export A='x y'; "


@needs_sshd
def test_run_feeds_stdin(comm: SSHCommunicator) -> None:
    out: list[str] = []
    assert comm.run("tr a-z A-Z", input="hello\nworld\n", stdout_cb=out.append) == 0
    assert out == ["HELLO", "WORLD"]


@needs_sshd
def test_run_closes_stdin_when_no_input(comm: SSHCommunicator) -> None:
    assert comm.run("cat", timeout=10) == 0


@needs_sshd
def test_run_masks_secrets(comm: SSHCommunicator) -> None:
    MASKER.add("hunter2-secret")
    try:
        out: list[str] = []
        comm.run("echo token=hunter2-secret", stdout_cb=out.append)
        assert out == [f"token={MASK}"]
        assert "hunter2-secret" not in "".join(comm.last_output_tail)
    finally:
        MASKER.clear()


@needs_sshd
def test_run_timeout_kills_the_remote_command(comm: SSHCommunicator) -> None:
    marker = f"{os.getpid()}{time.monotonic_ns() % 100000}"
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        comm.run(f"sleep 3{marker}; echo never", timeout=1.5, stdout_cb=lambda _: None)
    assert time.monotonic() - start < 8
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"sleep 3{marker}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the remote command should have been killed"
    assert comm.run("true") == 0, "the connection survives a command timeout"


@needs_sshd
def test_disconnect_mid_command_raises(sshd: LocalSSHD) -> None:
    c = sshd.communicator()
    c.wait(20)

    def on_line(line: str) -> None:
        kill_quietly(int(line))  # the sshd process serving this session

    with pytest.raises(SSHDisconnected):
        c.run("echo $PPID; sleep 30", stdout_cb=on_line, timeout=25)
    assert not c.connected
    with pytest.raises(SSHDisconnected):
        c.run("true")
    c.reconnect(20)
    assert c.run("true") == 0
    c.close()


@needs_sshd
def test_silent_dead_peer_is_detected(sshd: LocalSSHD) -> None:
    """A frozen guest behind SLIRP keeps TCP open; only an unanswered probe reveals it."""
    c = sshd.communicator()
    c.wait(20)
    c.probe_after, c.probe_timeout = 1.0, 2.0
    frozen: list[int] = []

    def on_line(line: str) -> None:
        frozen.append(int(line))
        os.kill(int(line), signal.SIGSTOP)

    start = time.monotonic()
    try:
        with pytest.raises(SSHDisconnected):
            c.run("echo $PPID; sleep 40", stdout_cb=on_line, timeout=30)
        assert time.monotonic() - start < 15
    finally:
        for pid in frozen:
            kill_quietly(pid)
        c.close()


# ---- files -------------------------------------------------------------------------------------------


@needs_sshd
def test_upload_and_download_file(comm: SSHCommunicator, tmp_path: Path) -> None:
    src = tmp_path / "hello.sh"
    src.write_text("#!/bin/sh\necho hi\n")
    src.chmod(0o750)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    assert comm.upload(src, str(remote_dir / "x.sh")) == str(remote_dir / "x.sh")
    assert (remote_dir / "x.sh").read_text() == src.read_text()
    assert (remote_dir / "x.sh").stat().st_mode & 0o777 == 0o750
    # into an existing directory keeps the name
    assert comm.upload(src, str(remote_dir)) == str(remote_dir / "hello.sh")
    comm.upload_bytes("data\n", str(remote_dir / "b.txt"), 0o600)
    assert (remote_dir / "b.txt").stat().st_mode & 0o777 == 0o600
    got = comm.download(str(remote_dir / "b.txt"), tmp_path / "local" / "b.txt")
    assert got.read_text() == "data\n"
    into = tmp_path / "into"
    into.mkdir()
    assert comm.download(str(remote_dir / "b.txt"), into) == into / "b.txt"


@needs_sshd
def test_upload_and_download_tree(comm: SSHCommunicator, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "a" / "b" / "deep.txt").write_text("deep")
    (src / "a" / "run.sh").write_text("x")
    (src / "a" / "run.sh").chmod(0o755)
    (src / "empty").mkdir()
    dest = tmp_path / "remote" / "new" / "tree2"
    comm.upload(src, str(dest))
    assert (dest / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (dest / "a" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "empty").is_dir()
    back = tmp_path / "back"
    comm.download(str(dest), back)
    assert sorted(str(p.relative_to(back)) for p in back.rglob("*")) == sorted(
        str(p.relative_to(src)) for p in src.rglob("*"))


@needs_sshd
def test_upload_missing_local_and_unwritable_remote(comm: SSHCommunicator, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        comm.upload(tmp_path / "nope", "/tmp/x")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(Exception, match="upload"):
        comm.upload(f, "/proc/definitely/not/here")
    with pytest.raises(Exception, match="download"):
        comm.download("/no/such/remote/file", tmp_path / "y")


@needs_sshd
def test_command_killed_by_signal_returns_minus_one(comm: SSHCommunicator) -> None:
    assert comm.run("kill -KILL $$") == -1
    assert comm.connected and comm.run("true") == 0
