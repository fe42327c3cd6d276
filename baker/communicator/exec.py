"""Commands in the guest over SSH: live line-by-line output, timeouts that kill the whole process
group, and a liveness probe for a guest that vanished behind SLIRP."""

from __future__ import annotations

import collections
import contextlib
import re
import select
import shlex
import threading
import time
from collections.abc import Callable, Mapping

import paramiko

from baker.communicator.connection import SSHConnection
from baker.communicator.errors import CommandTimeout, GuestGone, SSHDisconnected, SSHError, describe_error
from baker.secrets import MASKER

LineCallback = Callable[[str], None]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_HINT = "use letters, digits and underscores, not starting with a digit"
TAIL_LINES = 50
# first stderr line of every command: the session shell's PID (= its process group), so a timeout can kill it
_PID_TAG = "BAKER-PGID:"
_PID_LINE = re.compile(r"^BAKER-PGID:(\d+)$")


class _Lines:
    """Splits a byte stream into lines for a callback; partial lines are held until complete."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._emit(line.rstrip(b"\r").decode(errors="replace"))
        if len(self._buf) > 65536:  # a progress bar without newlines must not grow forever
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._emit(self._buf.rstrip(b"\r").decode(errors="replace"))
            self._buf = b""


def bad_env_name(env: Mapping[str, object]) -> str | None:
    """The first name in `env` a POSIX shell cannot export, or None."""
    return next((k for k in env if not _ENV_NAME.match(k)), None)


def env_prefix(env: dict[str, str] | None) -> str:
    """`export A='x' B='y'; ` for a POSIX shell; values shell-quoted, names validated."""
    if not env:
        return ""
    bad = bad_env_name(env)
    if bad is not None:
        raise SSHError(f"invalid environment variable name {bad!r}", hint=ENV_NAME_HINT)
    return "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + "; "


class SSHCommands(SSHConnection):
    """`run()`: one command at a time on the connection, its output streamed and its tail kept."""

    #: seconds of silence from a running command before we check the connection is still alive
    probe_after = 20.0
    probe_timeout = 20.0

    def run(self, command: str, *, env: dict[str, str] | None = None, timeout: float | None = None,
            stdout_cb: LineCallback | None = None, stderr_cb: LineCallback | None = None,
            input: str | None = None) -> int:
        """Run `command` in the user's login shell; stream output live; return the exit status.

        -1 means the command ended without an exit status (killed by a signal).
        """
        t = self._require()
        full = env_prefix(env) + command
        self.log.debug("ssh$ %s", MASKER.mask(command))
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.last_output_tail = []

        def emitter(prefix: str, cb: LineCallback | None) -> Callable[[str], None]:
            def emit(line: str) -> None:
                line = MASKER.mask(line)
                tail.append(f"{prefix} {line}")
                if cb is not None:
                    cb(line)
                else:
                    self.log.info("%s %s", prefix, line)
            return emit

        pgid: list[int] = []
        emit_err = emitter("err:", stderr_cb)

        def err_or_pid(line: str) -> None:
            if not pgid and (m := _PID_LINE.match(line)):
                pgid.append(int(m.group(1)))
            else:
                emit_err(line)

        out, err = _Lines(emitter("out:", stdout_cb)), _Lines(err_or_pid)
        full = f"printf '{_PID_TAG}%s\\n' \"$$\" >&2; " + full
        try:
            chan = t.open_session(timeout=30)
            chan.exec_command(full)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHDisconnected(f"could not start a command over SSH: {describe_error(e)}") from e
        if input is not None:
            data = input.encode()

            def feed() -> None:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    chan.sendall(data)
                    chan.shutdown_write()
            threading.Thread(target=feed, daemon=True, name="ssh-stdin").start()
        else:
            chan.shutdown_write()  # EOF on stdin: a command that reads it must not hang
        deadline = None if timeout is None else time.monotonic() + timeout
        last_seen = time.monotonic()
        try:
            while True:
                got = self._drain(chan, out, err)
                now = time.monotonic()
                if got:
                    last_seen = now
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if self._alive is not None and (why := self._alive()) is not None:
                    # a paused, panicked or dead guest never finishes the command: stop waiting now
                    with contextlib.suppress(Exception):
                        chan.close()
                    raise GuestGone(f"the VM stopped while a command was running: {why}",
                                    hint="see the serial console tail for why it stopped")
                if deadline is not None and now >= deadline:
                    self._kill(chan, pgid[0] if pgid else None)
                    raise CommandTimeout(f"command timed out after {timeout:g}s",
                                         hint="raise the provisioner's timeout, or look at the output tail")
                if now - last_seen > self.probe_after:
                    self._probe(t)
                    last_seen = now
                with contextlib.suppress(OSError, ValueError):
                    select.select([chan], [], [], 0.5)
            self._drain(chan, out, err)
        finally:
            out.flush()
            err.flush()
            self.last_output_tail = list(tail)
        status = chan.exit_status
        chan.close()
        if status == -1:
            # no exit-status: either the connection died or the process was killed by a signal
            if not t.is_active() or not self._still_alive(t):
                self._close_transport()
                raise SSHDisconnected("the SSH connection dropped while a command was running",
                                      hint="the guest rebooted or sshd went away; set "
                                           "expect_disconnect: true on a provisioner that reboots")
            self.log.warning("remote command ended without an exit status (killed by a signal?)")
        return status

    def start(self, command: str) -> paramiko.Channel:
        """Start `command` and hand back its channel, stdin open: for a conversation with the guest
        (e.g. a filesystem freeze that waits for the host), where `run` would wait for the end."""
        t = self._require()
        self.log.debug("ssh$ %s", MASKER.mask(command))
        try:
            chan = t.open_session(timeout=30)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHDisconnected(f"could not start a command over SSH: {describe_error(e)}") from e
        return chan

    @staticmethod
    def _drain(chan: paramiko.Channel, out: _Lines, err: _Lines) -> bool:
        """Feed whatever stdout and stderr hold right now to their line splitters; True if any."""
        got = False
        for ready, recv, lines in ((chan.recv_ready, chan.recv, out),
                                   (chan.recv_stderr_ready, chan.recv_stderr, err)):
            while ready():
                data = recv(32768)
                if not data:
                    break
                lines.feed(data)
                got = True
        return got

    def _still_alive(self, t: paramiko.Transport) -> bool:
        """Open and close a throwaway channel: the only reply-checked ping paramiko offers publicly."""
        try:
            ch = t.open_session(timeout=self.probe_timeout)
            ch.close()
            return True
        except (paramiko.SSHException, EOFError, OSError):
            return False

    def _probe(self, t: paramiko.Transport) -> None:
        # a guest that vanished behind SLIRP leaves the TCP socket open: only a reply proves it is there
        if not t.is_active() or not self._still_alive(t):
            self._close_transport()
            raise SSHDisconnected("the guest stopped answering over SSH while a command was running",
                                  hint="the guest may have rebooted or hung; see the serial log")

    def _kill(self, chan: paramiko.Channel, pgid: int | None) -> None:
        """Kill the command's process group from a second channel, then close its channel.

        sshd makes each session's shell a process-group leader, so `kill -- -PGID` reaches every child;
        sudo forwards the signal to what it runs. (RFC 4254 `signal` requests are refused by sshd for
        root sessions, so we do not rely on them.)
        """
        if pgid is not None and pgid > 1:
            k_term = f"kill -TERM -- -{pgid} 2>/dev/null || sudo -n kill -TERM -- -{pgid} 2>/dev/null"
            k_kill = f"kill -KILL -- -{pgid} 2>/dev/null || sudo -n kill -KILL -- -{pgid} 2>/dev/null"
            script = (f"{k_term}; for i in 1 2 3 4 5 6; do "
                      f"kill -0 -- -{pgid} 2>/dev/null || sudo -n kill -0 -- -{pgid} 2>/dev/null || exit 0; "
                      f"sleep 0.5; done; {k_kill}; true")
            try:
                t = self._require()
                k = t.open_session(timeout=10)
                k.exec_command(script)
                k.shutdown_write()
                k.status_event.wait(10)
                k.close()
            except (SSHError, paramiko.SSHException, EOFError, OSError) as e:
                self.log.debug("could not kill the timed-out remote command: %s", e)
        chan.close()
