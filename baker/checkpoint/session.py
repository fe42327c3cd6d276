"""The first boot's identity, kept beside the first layer of a chain: the cloud-init instance-id
and the build's SSH keys. A resumed build boots with the same seed identity, so the guest sees a
plain reboot of the same instance (cloud-init skips its per-instance work, the build user's key is
already in place) instead of a new instance: measured under TCG, that saves ~30 s per resume.

The file is 0600 and only opens VMs booted from this cache's layers, which anyone who can read the
file can read directly anyway; generalize removes the build user and its key from every image.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from baker.keys import CLIENT_KEY_NAME, BuildKeys
from baker.secrets import MASKER


@dataclass(frozen=True)
class Session:
    instance_id: str
    client_private: str
    client_public: str
    host_private_pem: str
    host_public: str


def session_path(root: Path, layer_id: str) -> Path:
    return root / f"{layer_id}.session"


def save(path: Path, keys: BuildKeys, instance_id: str) -> None:
    data = Session(instance_id, keys.client_private_path.read_text(), keys.client_public,
                   keys.host_private_pem, keys.host_public)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(data), f)
    os.replace(tmp, path)


def load(path: Path) -> Session | None:
    try:
        return Session(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def install(session: Session, work_dir: Path) -> BuildKeys:
    """The session's keys as this build's keys, the client key written 0600 into the work dir."""
    private = work_dir / CLIENT_KEY_NAME
    private.unlink(missing_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(session.client_private)
    MASKER.add(session.client_private)
    MASKER.add(session.host_private_pem)
    return BuildKeys(private, session.client_public, session.host_private_pem, session.host_public)
