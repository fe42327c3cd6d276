"""Per-build SSH keys: a client key for the build user and a host key we inject (pinned, not TOFU)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baker.secrets import MASKER

CLIENT_KEY_NAME = "build_ed25519"


@dataclass(frozen=True)
class BuildKeys:
    """Keys for one build; they live in the 0700 work dir and die with it."""

    client_private_path: Path
    client_public: str  # "ssh-ed25519 AAAA... baker-build"
    host_private_pem: str  # OpenSSH-format private key, for cloud-init ssh_keys.ed25519_private
    host_public: str  # "ssh-ed25519 AAAA... baker-host"

    def fingerprint(self) -> str:
        """The guest host key's fingerprint as OpenSSH prints it (SHA256:...)."""
        return fingerprint(self.host_public)

    def client_fingerprint(self) -> str:
        return fingerprint(self.client_public)


def parse_public_line(line: str) -> tuple[str, bytes]:
    """(key type, raw blob) of an OpenSSH public key line; ValueError if it is not one."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {line[:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as e:
        raise ValueError(f"public key blob is not base64: {e}") from e
    # the blob starts with its own type name; a mismatch means a corrupt or hand-edited line
    n = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + n].decode(errors="replace") != parts[0]:
        raise ValueError(f"public key blob does not match its type {parts[0]}")
    return parts[0], blob


def fingerprint_blob(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint(public_line: str) -> str:
    return fingerprint_blob(parse_public_line(public_line)[1])


def _ed25519_pair(comment: str) -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return private, f"{public} {comment}"


def _write_private(path: Path, data: str) -> None:
    """Create with 0600 from the first byte: never readable by others, even briefly."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


def generate_build_keys(work_dir: Path) -> BuildKeys:
    """Fresh keys for this build: the client private key is written to work_dir (0600)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    client_private, client_public = _ed25519_pair("baker-build")
    host_private, host_public = _ed25519_pair("baker-host")
    path = work_dir / CLIENT_KEY_NAME
    _write_private(path, client_private)
    (work_dir / f"{CLIENT_KEY_NAME}.pub").write_text(client_public + "\n")
    MASKER.add(client_private)
    MASKER.add(host_private)
    return BuildKeys(
        client_private_path=path, client_public=client_public,
        host_private_pem=host_private, host_public=host_public,
    )
