"""Build keys: formats OpenSSH and cloud-init accept, fingerprints as ssh-keygen prints them."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from baker.keys import fingerprint, generate_build_keys, parse_public_line
from baker.secrets import MASK, MASKER


def test_generated_keys_have_openssh_formats(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    assert keys.client_private_path == tmp_path / "build_ed25519"
    assert stat.S_IMODE(keys.client_private_path.stat().st_mode) == 0o600
    assert keys.client_private_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert keys.host_private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert keys.client_public.startswith("ssh-ed25519 AAAA") and keys.client_public.endswith(" baker-build")
    assert keys.host_public.startswith("ssh-ed25519 AAAA") and keys.host_public.endswith(" baker-host")
    assert (tmp_path / "build_ed25519.pub").read_text().strip() == keys.client_public
    # paramiko can load both private keys and derive the same public keys
    client = paramiko.Ed25519Key.from_private_key_file(str(keys.client_private_path))
    assert f"{client.get_name()} {client.get_base64()}" == keys.client_public.rsplit(" ", 1)[0]
    host_file = tmp_path / "host"
    host_file.write_text(keys.host_private_pem)
    host = paramiko.Ed25519Key.from_private_key_file(str(host_file))
    assert f"{host.get_name()} {host.get_base64()}" == keys.host_public.rsplit(" ", 1)[0]


def test_each_build_gets_new_keys(tmp_path: Path) -> None:
    a, b = generate_build_keys(tmp_path / "a"), generate_build_keys(tmp_path / "b")
    assert a.client_public != b.client_public and a.host_public != b.host_public
    assert a.client_public != a.host_public


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    assert keys.fingerprint().startswith("SHA256:") and not keys.fingerprint().endswith("=")
    assert len(keys.fingerprint()) == len("SHA256:") + 43
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    pub = tmp_path / "host.pub"
    pub.write_text(keys.host_public + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == keys.fingerprint()
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "build_ed25519.pub")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == keys.client_fingerprint() == fingerprint(keys.client_public)


def test_parse_public_line_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_public_line("ssh-ed25519")
    with pytest.raises(ValueError):
        parse_public_line("ssh-ed25519 not-base64!!")
    with pytest.raises(ValueError, match="does not match"):
        # a valid blob under the wrong type name
        parse_public_line("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGQ0H8+ZxN/sDtdgCDcYZ+bRXwYU1zUc2+JsY5m5yYmx")


def test_private_keys_are_masked(tmp_path: Path) -> None:
    keys = generate_build_keys(tmp_path)
    try:
        assert MASKER.mask(f"x {keys.host_private_pem} y") == f"x {MASK} y"
    finally:
        MASKER.clear()
