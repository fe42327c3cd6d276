"""Turn an image folder (published output or an export) into a store version: roles, results, parent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baker.store.catalog import Store, StoreError, Version

SIGNATURE_NAMES = ("provenance.dsse.json", "SHA256SUMS.sig")


def _passed(folder: Path, name: str) -> bool | None:
    p = folder / name
    if not p.is_file():
        return None
    try:
        return bool(json.loads(p.read_text()).get("passed"))
    except ValueError as e:
        raise StoreError(f"{p}: not readable JSON: {e}") from e


def record_dir(root: Path, name: str, version: str, folder: Path, manifest: dict[str, Any], *,
               base_sha256: str | None = None) -> Version:
    store = Store(root)
    try:
        artifacts = {a["file"] for a in manifest.get("artifacts", [])}
        files = []
        for p in sorted(folder.iterdir()):
            if not p.is_file():
                continue
            role = "artifact" if p.name in artifacts else "signature" if p.name in SIGNATURE_NAMES \
                else "metadata"
            files.append((p, p.name, role))
        parent = store.find_by_artifact(base_sha256) if base_sha256 else None
        return store.record(name, version, files, manifest, policy_passed=_passed(folder, "policy.json"),
                            scan_passed=_passed(folder, "scan.json"),
                            parent=(parent.name, parent.version) if parent else None)
    finally:
        store.close()
