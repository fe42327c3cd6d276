"""ed25519 signing keys in OpenSSH format, and trust anchors in ssh's allowed_signers format, so one
key and one trust file serve both the DSSE envelope and `ssh-keygen -Y verify`."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from baker.errors import BakerError
from baker.provenance import NAMESPACE

KEY_HINT = "create one with: ssh-keygen -t ed25519 -N '' -f baker-signing-key"


class KeyError_(BakerError):
    """A signing key or trust file that cannot be used."""


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    line: str  # "ssh-ed25519 AAAA..."
    principal: str = ""

    @property
    def keyid(self) -> str:
        """The OpenSSH fingerprint (SHA256:...), what `ssh-keygen -l` shows."""
        blob = base64.b64decode(self.line.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class SigningKey:
    path: Path
    private: Ed25519PrivateKey
    public: PublicKey


def load_signing_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyError_(f"cannot read signing key {path}: {e.strerror}", hint=KEY_HINT) from e
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError as e:
        raise KeyError_(f"signing key {path} is encrypted; baker needs an unencrypted key",
                        hint="ssh-keygen -p -N '' -f KEY removes the passphrase (keep the file 0600)") from e
    except ValueError as e:
        raise KeyError_(f"{path} is not an OpenSSH private key: {e}", hint=KEY_HINT) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"signing key {path} is not ed25519", hint=KEY_HINT)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    return SigningKey(path, key, PublicKey(key.public_key(), line))


def parse_public_line(line: str, principal: str = "") -> PublicKey:
    words = line.split()
    if len(words) < 2 or words[0] != "ssh-ed25519":
        raise KeyError_(f"not an ssh-ed25519 public key: {line[:60]!r}")
    try:
        key = serialization.load_ssh_public_key(f"{words[0]} {words[1]}".encode())
    except ValueError as e:
        raise KeyError_(f"bad ssh-ed25519 public key: {e}") from e
    assert isinstance(key, Ed25519PublicKey)
    return PublicKey(key, f"{words[0]} {words[1]}", principal)


def read_allowed_signers(path: Path) -> list[PublicKey]:
    """The ed25519 keys an allowed_signers file trusts for the baker-image namespace."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeyError_(f"cannot read allowed signers {path}: {e.strerror}") from e
    keys: list[PublicKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        at = next((i for i, w in enumerate(words) if w.startswith("ssh-")), None)
        if at is None or at + 1 >= len(words):
            raise KeyError_(f"{path}:{n}: expected 'PRINCIPALS [OPTIONS] ssh-ed25519 KEY'")
        options = " ".join(words[1:at])
        if "namespaces=" in options and NAMESPACE not in options:
            continue
        if words[at] == "ssh-ed25519":
            keys.append(parse_public_line(f"{words[at]} {words[at + 1]}", words[0]))
    return keys


def allowed_signers_line(key: PublicKey, principal: str = "baker") -> str:
    return f'{principal} namespaces="{NAMESPACE}" {key.line}\n'
