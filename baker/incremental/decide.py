"""Up to date or not: the new fingerprint against the last successful build of the same output
(its manifest.json), or else the store's latest version of the image's name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from baker.incremental.fingerprint import Fingerprint, changed_parts, describe_changes
from baker.outputs import MANIFEST


@dataclass(frozen=True)
class Decision:
    up_to_date: bool
    reason: str  # one line for people: why it is skipped, or what changed
    changed: tuple[str, ...] = ()  # the fingerprint parts that differ (when there was a build to compare)
    restore: str | None = None  # up to date in the store, output folder gone: put this version back there


def recorded(manifest: dict) -> Fingerprint | None:
    return Fingerprint.from_dict(manifest.get("inputs"))


def _intact(output_dir: Path, manifest: dict) -> str:
    """'' when every artifact the manifest lists is there at its recorded size; else what is not."""
    for a in manifest.get("artifacts", []):
        p = output_dir / str(a.get("file", ""))
        try:
            if p.stat().st_size != a.get("size"):
                return f"{p.name} has changed size since it was built"
        except OSError:
            return f"{p.name} is missing"
    return ""


def _store_manifest(store: Path | None, name: str) -> tuple[dict, str] | None:
    if store is None or not (store / "catalog.sqlite").exists():
        return None
    from baker.store import Store

    s = Store(store)
    try:
        v = s.latest(name)
        return (v.manifest, v.ref) if v is not None else None
    finally:
        s.close()


def decide(fp: Fingerprint, output_dir: Path, *, name: str, store: Path | None = None) -> Decision:
    if fp.unknown:
        return Decision(False, f"rebuilding: {fp.unknown}")
    manifest_path = output_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict):
        old = recorded(manifest)
        if old is None:
            return Decision(False, f"rebuilding: {manifest_path} records no inputs (built by an older baker)")
        if old.digest != fp.digest:
            return Decision(False, f"rebuilding: changed {describe_changes(old, fp)}",
                            tuple(changed_parts(old, fp)))
        broken = _intact(output_dir, manifest)
        if broken:
            return Decision(False, f"rebuilding: {broken}")
        since = manifest.get("built_at", "the last build")
        return Decision(True, f"up to date: no input changed since {since} ({output_dir})")
    stored = _store_manifest(store, name)
    if stored is not None:
        old = recorded(stored[0])
        if old is not None and old.digest == fp.digest:
            if output_dir.exists() and any(output_dir.iterdir()):
                return Decision(False, f"rebuilding: {output_dir} holds no {MANIFEST}")
            return Decision(True, f"up to date: the store's latest, {stored[1]}, has the same inputs; "
                                  f"restored it to {output_dir}", restore=stored[1])
        if old is not None:
            return Decision(False, f"rebuilding: changed since {stored[1]}: {describe_changes(old, fp)}",
                            tuple(changed_parts(old, fp)))
    return Decision(False, f"rebuilding: no earlier build of {output_dir}")


def restore(decision: Decision, output_dir: Path, store: Path | None) -> None:
    """Put the stored version an up-to-date decision names back at the output (Make's targets are
    its files), instead of baking the same inputs again."""
    if decision.restore is None or store is None:
        return
    from baker.store import Store

    s = Store(store)
    try:
        name, _, version = decision.restore.partition("@")
        s.export_version(s.get(name, version), output_dir)
    finally:
        s.close()
