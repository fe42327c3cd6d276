"""CycloneDX 1.6 JSON through cyclonedx-python-lib (the CycloneDX project's own, schema-following
serializer), with package URLs in the form syft writes, so tools that match on purls see the same keys."""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

import baker
from baker.sbom.inventory import Inventory, Package

_QUALIFIER_ORDER = ("arch", "epoch", "upstream", "distro")


class _Purl(PackageURL):
    """packageurl-python percent-encodes '+' in versions (`2%2Bdeb12u3`); syft and the Debian tooling
    write it as is. Both parse to the same purl; we print syft's form."""

    def to_string(self, encode: bool | None = True) -> str:
        quals = "&".join(f"{k}={self.qualifiers[k]}" for k in _QUALIFIER_ORDER
                         if isinstance(self.qualifiers, dict) and self.qualifiers.get(k))
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"pkg:{self.type}/{ns}{self.name}@{self.version}" + (f"?{quals}" if quals else "")

    __str__ = to_string


def purl(p: Package, inv: Inventory) -> _Purl:
    quals = {"arch": p.arch, "distro": inv.distro}
    if p.source and (p.source != p.name or (p.source_version and p.source_version != p.version)):
        quals["upstream"] = p.source if not p.source_version or p.source_version == p.version \
            else f"{p.source}@{p.source_version}"
    return _Purl(type=p.kind, namespace=inv.os_id, name=p.name, version=p.version, qualifiers=quals)


def to_cyclonedx(inv: Inventory, *, name: str, version: str) -> str:
    bom = Bom()
    bom.metadata.component = root = Component(type=ComponentType.OPERATING_SYSTEM, name=name,
                                       version=version or None, description=inv.os_name or None,
                                       bom_ref=f"image:{name}@{version}")
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="baker",
                                                version=baker.__version__))
    refs: set[str] = set()
    for p in inv.packages:
        pu = purl(p, inv)
        ref = str(pu)
        if ref in refs:
            continue
        refs.add(ref)
        bom.components.add(Component(type=ComponentType.LIBRARY, name=p.name, version=p.version, purl=pu,
                                      bom_ref=ref))
    bom.register_dependency(root, list(bom.components))
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def packages_of(sbom: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(name, arch) -> version from a CycloneDX JSON document (ours or syft's)."""
    out: dict[tuple[str, str], str] = {}
    for c in sbom.get("components", []) or []:
        arch = ""
        p = c.get("purl") or ""
        if "?" in p:
            quals = dict(q.split("=", 1) for q in p.split("?", 1)[1].split("&") if "=" in q)
            arch = quals.get("arch", "")
        if c.get("name"):
            out[(c["name"], arch)] = str(c.get("version", ""))
    return out


def load(text: str | bytes) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX":
        raise ValueError("not a CycloneDX JSON document")
    return data
