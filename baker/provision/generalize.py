"""The generalize-and-power-off command the shutdown step runs as the build user.

The script (provisioners/generalize.sh) is embedded in the command, so nothing needs uploading and
nothing is left behind: it runs as root through `sudo -n`, removes the build user we are logged in as
(userdel -f), and ends with the poweroff command. The connection dropping is the expected outcome.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from baker.errors import BakerError
from baker.template.model import GeneralizeConfig

_HERE = Path(__file__).resolve()
# installed: baker/data/provisioners (if packaged); source tree: <repo>/provisioners
_SEARCH = [_HERE.parents[1] / "data" / "provisioners", _HERE.parents[2] / "provisioners"]


def shipped_script(name: str) -> Path:
    """Path of one of baker's shipped provisioner scripts (wait-cloud-init.sh, apt-upgrade.sh, ...)."""
    for d in _SEARCH:
        p = d / name
        if p.is_file():
            return p
    raise BakerError(f"shipped provisioner script {name} not found (looked in "
                     f"{', '.join(str(d) for d in _SEARCH)})", hint="reinstall baker")


def generalize_env(cfg: GeneralizeConfig, username: str, poweroff_command: str | None) -> dict[str, str]:
    flag = {True: "1", False: "0"}
    return {
        "BAKER_GEN_CLOUD_INIT_CLEAN": flag[cfg.cloud_init_clean],
        "BAKER_GEN_MACHINE_ID": flag[cfg.machine_id],
        "BAKER_GEN_SSH_HOST_KEYS": flag[cfg.ssh_host_keys],
        "BAKER_GEN_LOGS": flag[cfg.logs],
        "BAKER_GEN_FSTRIM": flag[cfg.fstrim],
        "BAKER_GEN_REMOVE_USER": flag[cfg.remove_build_user],
        "BAKER_GEN_MIN_APT": flag[cfg.minimize.apt],
        "BAKER_GEN_MIN_DOCS": flag[cfg.minimize.docs],
        "BAKER_GEN_MIN_MAN": flag[cfg.minimize.man],
        "BAKER_GEN_MIN_LOCALES": " ".join(cfg.minimize.locales),
        "BAKER_GEN_USER": username,
        "BAKER_GEN_POWEROFF": poweroff_command or "",
    }


def generalize_command(cfg: GeneralizeConfig, username: str, *, poweroff_command: str | None = "poweroff",
                       script: str | None = None) -> str:
    """One shell command: run generalize.sh as root (sudo -n unless already root), ending in poweroff.

    Exit status 3 means the build user could not be fully removed; the guest is then NOT powered off.
    """
    text = script if script is not None else shipped_script("generalize.sh").read_text()
    env = generalize_env(cfg, username, poweroff_command)
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # `sudo -n env A=..`: variables survive sudo's env_reset; `sh -c SCRIPT generalize` names $0
    return ('if [ "$(id -u)" = 0 ]; then set --; else set -- sudo -n; fi; '
            f'"$@" env {assigns} /bin/sh -c {shlex.quote(text)} baker-generalize')
