"""SSH to the guest with paramiko: pinned host key, patient connect loop, live line-by-line output.

QEMU's user-mode hostfwd accepts TCP even while the guest is still booting, so resets and banner
timeouts are the normal sound of a boot; only authentication failures and host key mismatches are
real answers from a real sshd.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import posixpath
import re
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import paramiko

from baker.errors import BakerError
from baker.keys import fingerprint_blob, parse_public_line
from baker.secrets import MASKER

LineCallback = Callable[[str], None]
Alive = Callable[[], "str | None"]

# paramiko logs every refused banner of a booting guest as an ERROR with a traceback; our own log
# lines say what matters, so its transport chatter stays out of the build log unless it is critical
_PARAMIKO_LOG = "baker.ssh.paramiko"
logging.getLogger(_PARAMIKO_LOG).setLevel(logging.CRITICAL)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_HINT = "use letters, digits and underscores, not starting with a digit"
TAIL_LINES = 50
# first stderr line of every command: the session shell's PID (= its process group), so a timeout can kill it
_PID_TAG = "BAKER-PGID:"
_PID_LINE = re.compile(r"^BAKER-PGID:(\d+)$")


class SSHError(BakerError):
    """Any communicator failure."""


class SSHTimeout(SSHError):
    """No SSH session within the timeout; carries the last error seen."""

    def __init__(self, message: str, last_error: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.last_error = last_error


class HostKeyMismatch(SSHError):
    """The guest presented a host key other than the one baker injected (or the template pinned)."""

    def __init__(self, expected: str, got: str, key_type: str) -> None:
        self.expected = expected
        self.got = got
        super().__init__(
            f"SSH host key mismatch: the guest presented {got} ({key_type}), expected {expected}",
            hint="another machine may be answering on this port, or the image ignored cloud-init's "
                 "ssh_keys; communicator.host_key_check: off skips the check (insecure)",
        )


class SSHAuthFailed(SSHError):
    """sshd answered but refused our credentials too many times."""


class SSHDisconnected(SSHError):
    """The connection dropped (guest rebooted, sshd restarted, network gone)."""


class CommandTimeout(SSHError):
    """A remote command ran longer than its timeout; it was signalled and its channel closed."""


class GuestGone(SSHError):
    """The VM stopped while we were waiting for it; no point waiting out the timeout."""


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


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


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


class SSHCommunicator:
    """One SSH connection to the guest; `wait()` establishes it, `reconnect()` re-establishes it."""

    #: seconds of silence from a running command before we check the connection is still alive
    probe_after = 20.0
    probe_timeout = 20.0
    keepalive = 5
    retry_pause = 1.0

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 22,
        username: str = "baker",
        key_path: str | os.PathLike[str] | None = None,
        host_public: str | None = None,
        password: str | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.key_path = Path(key_path) if key_path else None
        self.host_public = host_public
        self.password = password
        self.log = log or logging.getLogger("baker.ssh")
        self.last_output_tail: list[str] = []
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._expected: tuple[str, bytes] | None = None
        if host_public:
            try:
                self._expected = parse_public_line(host_public)
            except ValueError as e:
                raise SSHError(f"the pinned host key is not valid: {e}") from e
        if password:
            MASKER.add(password)
        self._wait_timeout = 600.0
        self._alive: Alive | None = None
        self._attempts = 100
        self._lock = threading.Lock()

    # ---- connecting -------------------------------------------------------------------------------

    def wait(self, timeout: float, *, alive: Alive | None = None, handshake_attempts: int = 100,
             pause_before: float = 0) -> None:
        """Connect, retrying quietly while the guest boots; fail fast if QEMU dies or the key is wrong."""
        self._wait_timeout, self._alive, self._attempts = timeout, alive, handshake_attempts
        start = time.monotonic()
        deadline = start + timeout
        if self._expected is None:
            self.log.warning("SSH host key checking is off: accepting whatever key the guest presents")
        if pause_before > 0:
            self.log.info("pausing %.0fs before connecting", pause_before)
            self._sleep(min(pause_before, timeout), alive)
        auth_failures = mismatches = attempt = 0
        last_error = "no connection attempt was made"
        while True:
            self._check_alive(alive)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SSHTimeout(
                    f"no SSH session on {self.host}:{self.port} as {self.username} within {timeout:.0f}s "
                    f"({attempt} attempts); last error: {last_error}", last_error,
                    hint="raise communicator.ssh_timeout, or look at the serial console log / screenshot")
            attempt += 1
            try:
                self._connect(min(remaining, 15.0))
            except HostKeyMismatch as e:
                mismatches += 1
                last_error = str(e)
                if mismatches >= 3:
                    raise
                self.log.warning("%s (attempt %d, retrying in case the guest is still configuring)",
                                 e.message, mismatches)
            except paramiko.AuthenticationException as e:
                auth_failures += 1
                last_error = f"authentication as {self.username} failed: {_describe(e)}"
                log_fn = self.log.warning if auth_failures == 1 else self.log.debug
                log_fn("%s (%d of %d allowed)", last_error, auth_failures, handshake_attempts)
                if auth_failures >= handshake_attempts:
                    raise SSHAuthFailed(
                        f"sshd on {self.host}:{self.port} refused {self.username} {auth_failures} times",
                        hint="check communicator.ssh_username and the key/password; with cloud-init, "
                             "check that the image runs cloud-init with the NoCloud seed") from e
            except (OSError, EOFError, paramiko.SSHException) as e:
                last_error = _describe(e)
                self.log.debug("SSH not ready yet (attempt %d): %s", attempt, last_error)
            else:
                key = self._transport.get_remote_server_key() if self._transport else None
                fp = fingerprint_blob(key.asbytes()) if key else "?"
                self.log.info("SSH connected as %s after %.0fs (host key %s)", self.username,
                              time.monotonic() - start, fp)
                return
            self._sleep(min(self.retry_pause * min(attempt, 3), max(0.0, deadline - time.monotonic())),
                        alive)

    def reconnect(self, timeout: float | None = None) -> None:
        """Drop the current connection and wait for a new one (after a reboot, say)."""
        self._close_transport()
        self.wait(self._wait_timeout if timeout is None else timeout, alive=self._alive,
                  handshake_attempts=self._attempts)

    def _check_alive(self, alive: Alive | None) -> None:
        if alive is None:
            return
        reason = alive()
        if reason:
            raise GuestGone(f"the VM stopped while waiting for SSH: {reason}",
                            hint="see the serial console log for why it stopped")

    def _sleep(self, seconds: float, alive: Alive | None) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
            self._check_alive(alive)

    def _load_key(self) -> paramiko.PKey | None:
        if self.key_path is None:
            return None
        if self._pkey is None:
            try:
                self._pkey = paramiko.PKey.from_path(self.key_path)
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise SSHError(f"cannot load SSH private key {self.key_path}: {_describe(e)}") from e
        return self._pkey

    def _connect(self, per_attempt: float) -> None:
        pkey = self._load_key()
        sock = socket.create_connection((self.host, self.port), timeout=per_attempt)
        t = paramiko.Transport(sock)
        t.set_log_channel(_PARAMIKO_LOG)
        t.banner_timeout = t.handshake_timeout = t.auth_timeout = per_attempt
        if self._expected is not None:
            opts = t.get_security_options()
            types = list(opts.key_types)
            if self._expected[0] in types:  # ask for the pinned key type first
                types.remove(self._expected[0])
                opts.key_types = [self._expected[0], *types]
        try:
            t.start_client(timeout=per_attempt)
            self._verify(t.get_remote_server_key())
            if pkey is not None:
                try:
                    t.auth_publickey(self.username, pkey)
                except paramiko.AuthenticationException:
                    if not self.password:
                        raise
            if not t.is_authenticated() and self.password:
                t.auth_password(self.username, self.password)
            if not t.is_authenticated():
                raise paramiko.AuthenticationException("no credentials accepted")
        except BaseException:
            t.close()
            raise
        t.set_keepalive(self.keepalive)
        self._transport = t

    def _verify(self, key: paramiko.PKey) -> None:
        if self._expected is None:
            return
        want_blob = self._expected[1]
        if key.asbytes() != want_blob:
            raise HostKeyMismatch(fingerprint_blob(want_blob), fingerprint_blob(key.asbytes()),
                                  key.get_name())

    def _require(self) -> paramiko.Transport:
        t = self._transport
        if t is None or not t.is_active():
            raise SSHDisconnected("not connected to the guest over SSH",
                                  hint="the connection dropped earlier; the guest may have rebooted")
        return t

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    # ---- commands ---------------------------------------------------------------------------------

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
            raise SSHDisconnected(f"could not start a command over SSH: {_describe(e)}") from e
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

    @staticmethod
    def _drain(chan: paramiko.Channel, out: _Lines, err: _Lines) -> bool:
        got = False
        while chan.recv_ready():
            data = chan.recv(32768)
            if not data:
                break
            out.feed(data)
            got = True
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(32768)
            if not data:
                break
            err.feed(data)
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

    # ---- files ------------------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        t = self._require()
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(t)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise SSHDisconnected(f"could not open SFTP: {_describe(e)}") from e
            if self._sftp is None:
                raise SSHError("the guest's sshd offers no SFTP subsystem")
        return self._sftp

    def _sftp_error(self, what: str, e: BaseException) -> SSHError:
        if not self.connected:
            return SSHDisconnected(f"{what}: connection dropped ({_describe(e)})")
        return SSHError(f"{what}: {_describe(e)}")

    @staticmethod
    def _remote_isdir(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def _mkdir_p(self, sftp: paramiko.SFTPClient, path: str) -> None:
        parts = []
        p = path.rstrip("/")
        while p and p not in (".", "/") and not self._remote_isdir(sftp, p):
            parts.append(p)
            p = posixpath.dirname(p)
        for d in reversed(parts):
            sftp.mkdir(d)

    def upload(self, local: str | os.PathLike[str], remote: str) -> str:
        """Copy a file or directory tree to the guest; returns the remote path written.

        A file goes to `remote`, or into it when `remote` ends with "/" or is a directory.
        A directory becomes `remote` (its contents land in `remote`, created as needed).
        Modes are preserved.
        """
        local = Path(local)
        sftp = self._sftp_client()
        what = f"upload {local} -> {remote}"
        try:
            if local.is_dir():
                self._mkdir_p(sftp, remote)
                for root, dirs, files in os.walk(local):
                    rel = os.path.relpath(root, local)
                    rdir = remote.rstrip("/") if rel == "." else posixpath.join(remote, *Path(rel).parts)
                    for d in dirs:
                        rd = posixpath.join(rdir, d)
                        if not self._remote_isdir(sftp, rd):
                            sftp.mkdir(rd)
                        sftp.chmod(rd, stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode))
                    for f in files:
                        src = os.path.join(root, f)
                        rf = posixpath.join(rdir, f)
                        sftp.put(src, rf)
                        sftp.chmod(rf, stat.S_IMODE(os.stat(src).st_mode))
                return remote
            if not local.exists():
                raise SSHError(f"{what}: local file does not exist")
            target = remote
            if remote.endswith("/") or self._remote_isdir(sftp, remote):
                target = posixpath.join(remote, local.name)
            sftp.put(str(local), target)
            sftp.chmod(target, stat.S_IMODE(local.stat().st_mode))
            return target
        except SSHError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(what, e) from e

    def upload_bytes(self, data: bytes | str, remote: str, mode: int = 0o644) -> None:
        """Write `data` to a remote file with `mode` (written first, then chmod)."""
        sftp = self._sftp_client()
        raw = data.encode() if isinstance(data, str) else data
        try:
            with sftp.open(remote, "wb") as f:
                f.write(raw)
            sftp.chmod(remote, mode)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(f"write {remote}", e) from e

    def download(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy a remote file or directory tree to `local`; returns the local path written.

        A file goes to `local`, or into it when `local` is an existing directory or ends with "/".
        A directory becomes `local`.
        """
        sftp = self._sftp_client()
        local_s = os.fspath(local)
        dest = Path(local_s)
        what = f"download {remote} -> {local_s}"
        try:
            st = sftp.stat(remote)
            if stat.S_ISDIR(st.st_mode or 0):
                self._get_tree(sftp, remote, dest)
                return dest
            if local_s.endswith("/") or dest.is_dir():
                dest = dest / posixpath.basename(remote.rstrip("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(dest))
            os.chmod(dest, stat.S_IMODE(st.st_mode or 0o644))
            return dest
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._sftp_error(what, e) from e

    def _get_tree(self, sftp: paramiko.SFTPClient, remote: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote):
            r = posixpath.join(remote, entry.filename)
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                self._get_tree(sftp, r, dest / entry.filename)
            elif stat.S_ISREG(mode):
                sftp.get(r, str(dest / entry.filename))
                os.chmod(dest / entry.filename, stat.S_IMODE(mode))
            elif stat.S_ISLNK(mode):
                with contextlib.suppress(OSError):
                    os.symlink(sftp.readlink(r) or "", dest / entry.filename)

    # ---- lifetime ---------------------------------------------------------------------------------

    def _close_transport(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None

    def close(self) -> None:
        self._close_transport()

    def __enter__(self) -> SSHCommunicator:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
