"""Map baker's generic OS id (`debian12_64`, `ubuntu_64`, `rhel9_64`, `linux_64`, ...) to each format's own.

Importers pick drivers and defaults from these ids, so a wrong one is worse than a generic one: when a
family is unknown we fall back to "generic 64-bit Linux" everywhere. Every value can be overridden
per export (`os_id`, `vmware_os_type`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class OsIds:
    cim: int  # OVF OperatingSystemSection ovf:id (CIM_OperatingSystem.OsType)
    vmware: str  # vmw:osType (guestId)
    virtualbox: str  # vbox:OSType
    libosinfo: str | None  # libvirt <libosinfo:os id=...>, only when the version is known


_OS_RE = re.compile(r"^(?P<family>[a-z]+?)(?P<version>\d+)?(?P<bits>_64)?$")

# family -> (cim id 64-bit, cim id 32-bit, vmware guest id pattern, virtualbox, libosinfo pattern)
_FAMILIES: dict[str, tuple[int, int, str, str, str | None]] = {
    "debian": (96, 95, "debian{v}_64Guest", "Debian", "http://debian.org/debian/{v}"),
    "ubuntu": (94, 93, "ubuntu64Guest", "Ubuntu", None),
    "rhel": (80, 79, "rhel{v}_64Guest", "RedHat", "http://redhat.com/rhel/{v}.0"),
    "centos": (107, 106, "centos{v}_64Guest", "RedHat", None),
    "rocky": (80, 79, "rhel{v}_64Guest", "RedHat", None),
    "alma": (80, 79, "rhel{v}_64Guest", "RedHat", None),
    "oracle": (109, 108, "oracleLinux{v}_64Guest", "Oracle", None),
    "fedora": (101, 36, "fedora64Guest", "Fedora", "http://fedoraproject.org/fedora/{v}"),
    "opensuse": (83, 82, "opensuse64Guest", "OpenSUSE", None),
    "sles": (85, 84, "sles{v}_64Guest", "OpenSUSE", None),
    "arch": (101, 36, "other5xLinux64Guest", "ArchLinux", None),
    "freebsd": (78, 42, "freebsd{v}_64Guest", "FreeBSD", None),
    "linux": (101, 36, "other3xLinux64Guest", "Linux26", None),
    "other": (102, 1, "otherGuest64", "Other", None),
}
# VMware guest ids only exist for some versions; clamp to the newest one ESXi 6.5+ knows and the oldest.
_VMWARE_VERSIONS = {"debian": (6, 11), "rhel": (6, 9), "centos": (6, 9), "rocky": (6, 9), "alma": (6, 9),
                    "oracle": (6, 9), "sles": (11, 15), "freebsd": (11, 13)}


def os_ids(os_type: str) -> OsIds:
    """Ids for a generic OS type; unknown families become generic Linux (never an error)."""
    m = _OS_RE.match(os_type.strip().lower())
    family = m.group("family") if m else "linux"
    if family not in _FAMILIES:
        family = "linux"
    version = m.group("version") if m else None
    bits64 = bool(m and m.group("bits")) or family in ("linux", "other")
    cim64, cim32, vmware, vbox, osinfo = _FAMILIES[family]
    if "{v}" in vmware:
        lo, hi = _VMWARE_VERSIONS.get(family, (0, 99))
        if version is None:
            vmware = {"debian": "debian10_64Guest"}.get(family, "other3xLinux64Guest")
        else:
            vmware = vmware.format(v=min(max(int(version), lo), hi))
    if not bits64:
        vmware = vmware.replace("_64Guest", "Guest").replace("64Guest", "Guest")
    return OsIds(
        cim=cim64 if bits64 else cim32,
        vmware=vmware,
        virtualbox=f"{vbox}_64" if bits64 else vbox,
        libosinfo=osinfo.format(v=version) if osinfo and version else None,
    )
