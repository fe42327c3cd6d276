"""The SSH connection to the guest: pinned host key, patient connect loop, reconnects.

QEMU's user-mode hostfwd accepts TCP even while the guest is still booting, so resets and banner
timeouts are the normal sound of a boot; only authentication failures and host key mismatches are
real answers from a real sshd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko

from baker.communicator import errors as ssh_errors
from baker.communicator.errors import describe_error
from baker.keys import fingerprint_blob, parse_public_line
from baker.secrets import MASKER

Alive = Callable[[], "str | None"]

# paramiko logs every refused banner of a booting guest as an ERROR with a traceback; our own log
# lines say what matters, so its transport chatter stays out of the build log unless it is critical
_PARAMIKO_LOG = "baker.ssh.paramiko"
logging.getLogger(_PARAMIKO_LOG).setLevel(logging.CRITICAL)


class SSHConnection:
    """One SSH connection to the guest; `wait()` establishes it, `reconnect()` re-establishes it."""

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
        self.last_output_tail: list[str] = []  # output of the last command (SSHCommands.run)
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._expected: tuple[str, bytes] | None = None
        if host_public:
            try:
                self._expected = parse_public_line(host_public)
            except ValueError as e:
                raise ssh_errors.SSHError(f"the pinned host key is not valid: {e}") from e
        if password:
            MASKER.add(password)
        self._wait_timeout = 600.0
        self._alive: Alive | None = None
        self._attempts = 100
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
                raise ssh_errors.SSHTimeout(
                    f"no SSH session on {self.host}:{self.port} as {self.username} within {timeout:.0f}s "
                    f"({attempt} attempts); last error: {last_error}", last_error,
                    hint="raise communicator.ssh_timeout, or look at the serial console log / screenshot")
            attempt += 1
            try:
                self._connect(min(remaining, 15.0))
            except ssh_errors.HostKeyMismatch as e:
                mismatches += 1
                last_error = str(e)
                if mismatches >= 3:
                    raise
                self.log.warning("%s (attempt %d, retrying in case the guest is still configuring)",
                                 e.message, mismatches)
            except paramiko.AuthenticationException as e:
                auth_failures += 1
                last_error = f"authentication as {self.username} failed: {describe_error(e)}"
                log_fn = self.log.warning if auth_failures == 1 else self.log.debug
                log_fn("%s (%d of %d allowed)", last_error, auth_failures, handshake_attempts)
                if auth_failures >= handshake_attempts:
                    raise ssh_errors.SSHAuthFailed(
                        f"sshd on {self.host}:{self.port} refused {self.username} {auth_failures} times",
                        hint="check communicator.ssh_username and the key/password; with cloud-init, "
                             "check that the image runs cloud-init with the NoCloud seed") from e
            except (OSError, EOFError, paramiko.SSHException) as e:
                last_error = describe_error(e)
                self.log.debug("SSH not ready yet (attempt %d): %s", attempt, last_error)
            else:
                key = self._transport.get_remote_server_key() if self._transport else None
                fp = fingerprint_blob(key.asbytes()) if key else "?"
                self.log.info("SSH connected as %s after %.0fs (host key %s)", self.username,
                              time.monotonic() - start, fp)
                return
            self._sleep(min(self.retry_pause, max(0.0, deadline - time.monotonic())),
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
            raise ssh_errors.GuestGone(f"the VM stopped while waiting for SSH: {reason}",
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
                raise ssh_errors.SSHError(
                    f"cannot load SSH private key {self.key_path}: {describe_error(e)}") from e
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
            raise ssh_errors.HostKeyMismatch(fingerprint_blob(want_blob), fingerprint_blob(key.asbytes()),
                                             key.get_name())

    def _require(self) -> paramiko.Transport:
        t = self._transport
        if t is None or not t.is_active():
            raise ssh_errors.SSHDisconnected(
                "not connected to the guest over SSH",
                hint="the connection dropped earlier; the guest may have rebooted")
        return t

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
