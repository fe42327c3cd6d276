"""What can go wrong talking to the guest over SSH; callers catch these, not paramiko's."""

from __future__ import annotations

from baker.errors import BakerError


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


def describe_error(e: BaseException) -> str:
    """`Type: text` for a low-level exception, without repeating a type its text already names."""
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text
