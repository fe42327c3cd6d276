"""The NoCloud seed: label, files, the build user, the pinned host key, and merge rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from baker.iso9660 import read_iso
from baker.keys import BuildKeys, generate_build_keys
from baker.secrets import MASKER
from baker.seed import deep_merge, render_user_data, sanitize_hostname, write_seed
from baker.template.model import CloudInitConfig


@pytest.fixture
def keys(tmp_path: Path) -> BuildKeys:
    return generate_build_keys(tmp_path / "keys")


def user_data(keys: BuildKeys, ud: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    text = render_user_data(username="baker", keys=keys, cloud_init=CloudInitConfig(user_data=ud or {}), **kw)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_seed_iso_has_label_and_files(tmp_path: Path, keys: BuildKeys) -> None:
    ci = CloudInitConfig(meta_data={"public-keys": ["x"]},
                         network_config={"version": 2, "ethernets": {"e": {"match": {"name": "e*"},
                                                                           "dhcp4": True}}})
    path = write_seed(tmp_path / "seed.iso", hostname="Web Server_v2", instance_id="baker-123",
                      username="baker", keys=keys, cloud_init=ci)
    assert path == tmp_path / "seed.iso"
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    iso.close()
    files = read_iso(path)
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "baker-123", "local-hostname": "web-server-v2", "public-keys": ["x"]}
    assert yaml.safe_load(files["network-config"])["ethernets"]["e"]["dhcp4"] is True
    ud = yaml.safe_load(files["user-data"])
    assert ud["ssh_keys"]["ed25519_public"] == keys.host_public


def test_no_network_config_unless_given(tmp_path: Path, keys: BuildKeys) -> None:
    path = write_seed(tmp_path / "s.iso", hostname="h", instance_id="i", username="baker", keys=keys,
                      cloud_init=CloudInitConfig())
    assert "network-config" not in read_iso(path)


def test_build_user_and_host_key(keys: BuildKeys) -> None:
    ud = user_data(keys)
    (user,) = ud["users"]
    assert user["name"] == "baker"
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["shell"] == "/bin/bash"
    assert user["ssh_authorized_keys"] == [keys.client_public]
    assert user["lock_passwd"] is True and "plain_text_passwd" not in user
    assert ud["ssh_pwauth"] is False and ud["disable_root"] is True
    assert ud["ssh_deletekeys"] is True and ud["ssh_genkeytypes"] == []
    assert ud["ssh_keys"] == {"ed25519_private": keys.host_private_pem, "ed25519_public": keys.host_public}


def test_password_enables_password_auth_and_is_masked(keys: BuildKeys) -> None:
    try:
        ud = user_data(keys, password="s3cret-pw")
        assert ud["users"][0]["plain_text_passwd"] == "s3cret-pw"
        assert ud["users"][0]["lock_passwd"] is False
        assert ud["ssh_pwauth"] is True
    finally:
        MASKER.clear()


def test_merge_rules(keys: BuildKeys) -> None:
    ud = user_data(keys, {
        "packages": ["nginx"],
        "runcmd": [["echo", "hi"]],
        "write_files": [{"path": "/etc/x", "content": "y"}],
        "users": ["default", {"name": "alice", "groups": "sudo"}],
        "ssh_pwauth": True,  # scalars: the user wins
        "disable_root": False,
        "ssh_genkeytypes": ["rsa"],  # lists: appended
        "apt": {"preserve_sources_list": True},
        "ssh_keys": {"ed25519_private": "EVIL", "rsa_private": "R", "rsa_public": "ssh-rsa R"},
    })
    assert ud["packages"] == ["nginx"] and ud["runcmd"] == [["echo", "hi"]]
    assert ud["write_files"] == [{"path": "/etc/x", "content": "y"}]
    assert [u if isinstance(u, str) else u["name"] for u in ud["users"]] == ["baker", "default", "alice"]
    assert ud["ssh_pwauth"] is True and ud["disable_root"] is False
    assert ud["ssh_genkeytypes"] == ["rsa"]
    assert ud["apt"] == {"preserve_sources_list": True}
    # the pinned host key cannot be replaced; other key types may be added
    assert ud["ssh_keys"]["ed25519_private"] == keys.host_private_pem
    assert ud["ssh_keys"]["rsa_private"] == "R"


def test_build_user_entry_always_stays(keys: BuildKeys) -> None:
    ud = user_data(keys, {"users": [{"name": "baker", "sudo": False, "shell": "/bin/zsh",
                                     "groups": ["docker"], "ssh_authorized_keys": ["ssh-ed25519 OTHER x"]}]})
    (user,) = ud["users"]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["shell"] == "/bin/bash"
    assert user["groups"] == ["docker"]  # extra fields are kept
    assert user["ssh_authorized_keys"] == [keys.client_public, "ssh-ed25519 OTHER x"]


def test_deep_merge_does_not_mutate_inputs() -> None:
    a = {"x": [1], "d": {"k": 1}}
    b = {"x": [2], "d": {"j": 2}, "s": 3}
    assert deep_merge(a, b) == {"x": [1, 2], "d": {"k": 1, "j": 2}, "s": 3}
    assert a == {"x": [1], "d": {"k": 1}} and b == {"x": [2], "d": {"j": 2}, "s": 3}
    assert deep_merge({"a": {"b": 1}}, {"a": "scalar"}) == {"a": "scalar"}


@pytest.mark.parametrize(("name", "want"), [("debian-12", "debian-12"), ("My_Image.v1", "my-image-v1"),
                                            ("---", "baker"), ("x" * 80, "x" * 63)])
def test_sanitize_hostname(name: str, want: str) -> None:
    assert sanitize_hostname(name) == want


def test_no_build_user_when_nothing_could_remove_it(tmp_path):
    """communicator: none has no SSH session to generalize through, so the seed creates no user."""
    from baker.keys import generate_build_keys
    from baker.seed import build_user_data
    from baker.template.model import CloudInitConfig

    keys = generate_build_keys(tmp_path)
    data = build_user_data(username=None, keys=keys, cloud_init=CloudInitConfig())
    assert data["users"] == [] and keys.client_public not in str(data)
    assert data["ssh_keys"]["ed25519_public"] == keys.host_public
