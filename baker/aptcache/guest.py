"""The guest's side: one apt.conf.d file that points apt at the proxy, and its removal.

Only plain-http sources go through it (Acquire::http::Proxy); https sources are fetched directly.
The file names a port of this build only, so it must never reach the image: the shutdown step
removes it before generalize, whatever the provisioners did.
"""

from __future__ import annotations

import shlex

GUEST_CONF = "/etc/apt/apt.conf.d/00baker-apt-cache"


def guest_install_command(proxy_url: str) -> str:
    line = f'Acquire::http::Proxy "{proxy_url}";\n'
    return f"printf %s {shlex.quote(line)} | sudo -n tee {GUEST_CONF} >/dev/null"


def guest_remove_command() -> str:
    return f"sudo -n rm -f {GUEST_CONF}"
