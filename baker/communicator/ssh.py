"""SSH to the guest with paramiko: the connection (connection.py), commands (exec.py) and files
(sftp.py), put together as the one communicator the build and the provisioners use."""

from __future__ import annotations

from baker.communicator.connection import Alive, SSHConnection
from baker.communicator.errors import (
    CommandTimeout,
    GuestGone,
    HostKeyMismatch,
    SSHAuthFailed,
    SSHDisconnected,
    SSHError,
    SSHTimeout,
)
from baker.communicator.exec import ENV_NAME_HINT, LineCallback, SSHCommands, bad_env_name, env_prefix
from baker.communicator.sftp import SSHFiles

__all__ = [
    "ENV_NAME_HINT",
    "Alive",
    "CommandTimeout",
    "GuestGone",
    "HostKeyMismatch",
    "LineCallback",
    "SSHAuthFailed",
    "SSHCommunicator",
    "SSHConnection",
    "SSHDisconnected",
    "SSHError",
    "SSHTimeout",
    "bad_env_name",
    "env_prefix",
]


class SSHCommunicator(SSHCommands, SSHFiles):
    """One SSH connection to the guest with commands and file transfer; `wait()` connects."""
