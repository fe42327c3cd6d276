"""How baker talks to the guest: SSH only (WinRM is out of scope)."""

from baker.communicator.ssh import (
    CommandTimeout,
    GuestGone,
    HostKeyMismatch,
    SSHAuthFailed,
    SSHCommunicator,
    SSHDisconnected,
    SSHError,
    SSHTimeout,
)

__all__ = [
    "CommandTimeout",
    "GuestGone",
    "HostKeyMismatch",
    "SSHAuthFailed",
    "SSHCommunicator",
    "SSHDisconnected",
    "SSHError",
    "SSHTimeout",
]
