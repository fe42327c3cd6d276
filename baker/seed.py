"""The cloud-init NoCloud seed: creates the build user with our key and pins the guest's SSH host key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from baker.iso9660 import write_iso
from baker.keys import BuildKeys
from baker.lean_boot import lean_module_lists
from baker.secrets import MASKER
from baker.template.model import CloudInitConfig

SEED_LABEL = "cidata"


def sanitize_hostname(name: str) -> str:
    """A valid RFC 1123 label from a template name ("Web Server_v2" -> "web-server-v2")."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "baker"


def _build_user(username: str, keys: BuildKeys, password: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {
        "name": username,
        "gecos": "baker build user (removed by generalize)",
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": password is None,
        "ssh_authorized_keys": [keys.client_public],
    }
    if password is not None:
        # plain text is acceptable here: the seed sits in the 0700 work dir and the user dies at generalize
        user["plain_text_passwd"] = password
    return user


def _base_config(username: str, keys: BuildKeys, password: str | None) -> dict[str, Any]:
    return {
        "users": [_build_user(username, keys, password)],
        # password SSH only when the template asked for a password; keys are always there
        "ssh_pwauth": password is not None,
        "disable_root": True,
        # the guest must present exactly our host key: delete the image's keys, generate none
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": keys.host_private_pem, "ed25519_public": keys.host_public},
    }


def deep_merge(base: Any, extra: Any) -> Any:
    """Lists append, dicts merge recursively, anything else: `extra` wins. Inputs are not modified."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return [*base, *copy.deepcopy(extra)]
    return copy.deepcopy(extra)


def _merge_users(ours: dict[str, Any], theirs: list[Any]) -> list[Any]:
    """The build user always stays as we define it; a same-named entry only adds fields and keys."""
    out: list[Any] = [ours]
    name = ours["name"]
    for entry in theirs:
        if isinstance(entry, dict) and entry.get("name") == name:
            merged = deep_merge(entry, {})
            mine = ours["ssh_authorized_keys"]
            keys = [*mine, *[k for k in entry.get("ssh_authorized_keys", []) if k not in mine]]
            merged.update(ours)
            merged["ssh_authorized_keys"] = keys
            out[0] = merged
        else:
            out.append(copy.deepcopy(entry))
    return out


def build_user_data(*, username: str | None, keys: BuildKeys, cloud_init: CloudInitConfig,
                    password: str | None = None) -> dict[str, Any]:
    """The merged cloud-config as a dict (see render_user_data).

    username None: no build user at all (communicator none: nothing would remove it before shutdown).
    """
    base = _base_config(username or "", keys, password)
    user = dict(cloud_init.user_data or {})
    their_users = user.pop("users", None) or []
    if not isinstance(their_users, list):
        their_users = [their_users]
    merged = deep_merge(base, user)
    if username is None:
        merged["users"] = their_users
        merged["ssh_pwauth"] = False
    else:
        merged["users"] = _merge_users(base["users"][0], their_users)
    # the pinned host key must survive: a user-supplied ed25519 pair would break host key checking
    merged["ssh_keys"] = {**merged.get("ssh_keys", {}), **base["ssh_keys"]}
    if cloud_init.lean_boot:
        merged.update(lean_module_lists(cloud_init.user_data or {}, password=password is not None)[0])
    return merged


def render_user_data(*, username: str | None, keys: BuildKeys, cloud_init: CloudInitConfig,
                     password: str | None = None) -> str:
    """`#cloud-config` text: baker's build user and pinned host key, deep-merged with the template's."""
    data = build_user_data(username=username, keys=keys, cloud_init=cloud_init, password=password)
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=4096)


def render_meta_data(*, hostname: str, instance_id: str, cloud_init: CloudInitConfig) -> str:
    meta = {"instance-id": instance_id, "local-hostname": sanitize_hostname(hostname),
            **(cloud_init.meta_data or {})}
    return yaml.safe_dump(meta, sort_keys=False)


def write_seed(dest: Path, *, hostname: str, instance_id: str, username: str | None, keys: BuildKeys,
               cloud_init: CloudInitConfig, password: str | None = None) -> Path:
    """Write the NoCloud seed ISO (label `cidata`) and return its path."""
    if password is not None:
        MASKER.add(password)
    files: dict[str, bytes | str | Path] = {
        "meta-data": render_meta_data(hostname=hostname, instance_id=instance_id, cloud_init=cloud_init),
        "user-data": render_user_data(username=username, keys=keys, cloud_init=cloud_init,
                                      password=password),
    }
    if cloud_init.network_config is not None:
        files["network-config"] = yaml.safe_dump(cloud_init.network_config, sort_keys=False)
    return write_iso(dest, files, label=SEED_LABEL)
