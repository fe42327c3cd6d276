"""Added, removed and changed packages between two SBOMs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from baker.sbom.cyclonedx import packages_of


@dataclass
class SbomDiff:
    added: list[tuple[str, str, str]] = field(default_factory=list)  # (name, arch, version)
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    changed: list[tuple[str, str, str, str]] = field(default_factory=list)  # (name, arch, old, new)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        def arch(a: str) -> str:
            return f" ({a})" if a else ""
        return ([f"+ {n} {v}{arch(a)}" for n, a, v in self.added]
                + [f"- {n} {v}{arch(a)}" for n, a, v in self.removed]
                + [f"~ {n} {old} -> {new}{arch(a)}" for n, a, old, new in self.changed])

    def to_dict(self) -> dict[str, Any]:
        return {"added": [{"name": n, "arch": a, "version": v} for n, a, v in self.added],
                "removed": [{"name": n, "arch": a, "version": v} for n, a, v in self.removed],
                "changed": [{"name": n, "arch": a, "from": o, "to": v} for n, a, o, v in self.changed]}


def diff(old: dict[str, Any], new: dict[str, Any]) -> SbomDiff:
    a, b = packages_of(old), packages_of(new)
    d = SbomDiff()
    for key in sorted(b.keys() - a.keys()):
        d.added.append((*key, b[key]))
    for key in sorted(a.keys() - b.keys()):
        d.removed.append((*key, a[key]))
    for key in sorted(a.keys() & b.keys()):
        if a[key] != b[key]:
            d.changed.append((*key, a[key], b[key]))
    return d
