"""Read the guest's installed packages over the communicator: dpkg-query, and rpm where it has a database.

One shell command prints tab-separated records (no parsing of human-oriented output), so the same
parser serves Debian, Ubuntu and RPM distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from baker.errors import BakerError

# ${db:Status-Abbrev} is "ii " for an installed package; the second letter is the current state
QUERY = r"""
. /etc/os-release 2>/dev/null
printf 'OS\t%s\t%s\t%s\n' "${ID:-unknown}" "${VERSION_ID:-}" "${PRETTY_NAME:-}"
if command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='DEB\t${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t'\
'${source:Package}\t${source:Version}\n'
fi
if command -v rpm >/dev/null 2>&1 && [ -n "$(rpm -qa 2>/dev/null | head -n 1)" ]; then
  rpm -qa --qf 'RPM\t%{NAME}\t%{EPOCHNUM}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n'
fi
"""


@dataclass(frozen=True)
class Package:
    kind: str  # "deb" | "rpm"
    name: str
    version: str
    arch: str
    source: str = ""
    source_version: str = ""


@dataclass
class Inventory:
    os_id: str = "unknown"
    os_version: str = ""
    os_name: str = ""
    packages: list[Package] = field(default_factory=list)

    @property
    def distro(self) -> str:
        """The purl `distro` qualifier, as syft writes it: debian-12, ubuntu-22.04, rocky-9.3."""
        return f"{self.os_id}-{self.os_version}" if self.os_version else self.os_id


def parse(text: str) -> Inventory:
    inv = Inventory()
    for line in text.splitlines():
        f = line.split("\t")
        if f[0] == "OS" and len(f) >= 4:
            inv.os_id, inv.os_version, inv.os_name = f[1] or "unknown", f[2], f[3]
        elif f[0] == "DEB" and len(f) >= 7:
            if len(f[1]) < 2 or f[1][1] != "i":
                continue  # removed, config-files only, not installed
            inv.packages.append(Package("deb", f[2], f[3], f[4], f[5], f[6]))
        elif f[0] == "RPM" and len(f) >= 7 and f[1] != "gpg-pubkey":
            epoch = "" if f[2] in ("", "0", "(none)") else f"{f[2]}:"
            srpm = f[6].rsplit("-", 2)[0] if f[6] not in ("", "(none)") else ""
            inv.packages.append(Package("rpm", f[1], f"{epoch}{f[3]}-{f[4]}", f[5], srpm))
    inv.packages.sort(key=lambda p: (p.kind, p.name, p.arch))
    return inv


def read_guest(run: Callable[..., int]) -> Inventory:
    """`run` is the communicator's run(command, stdout_cb=...) -> exit status."""
    lines: list[str] = []
    rc = run(QUERY, stdout_cb=lines.append)
    if rc != 0:
        raise BakerError(f"reading the installed packages in the guest failed (exit {rc})",
                         hint="the SBOM needs dpkg-query or rpm in the guest")
    inv = parse("\n".join(lines))
    if not inv.packages:
        raise BakerError("no installed packages found in the guest (neither dpkg nor rpm answered)")
    return inv
