"""Image folders like a build publishes them (without booting anything), for store and verify tests."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from baker.inputs import BuildInputs, Input
from baker.provenance import STATEMENT_FILE
from baker.provenance.statement import dumps, statement, subject_files


def make_key(folder: Path, name: str = "key") -> tuple[Path, Path]:
    """An ed25519 key made by ssh-keygen, and an allowed_signers file trusting it."""
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t@example", "-f", str(key)],
                   check=True)
    pub = (folder / f"{name}.pub").read_text().split()
    signers = folder / f"{name}.allowed_signers"
    signers.write_text(f'release@example namespaces="baker-image" {pub[0]} {pub[1]}\n')
    return key, signers


def image_dir(folder: Path, name: str = "img", version: str = "1.0", *, disk: bytes = b"disk-bytes" * 1000,
              policy_passed: bool | None = True, packages: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / f"{name}.qcow2").write_bytes(disk)
    digest = hashlib.sha256(disk).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  {name}.qcow2\n")
    manifest = {"name": name, "version": version,
                "artifacts": [{"file": f"{name}.qcow2", "sha256": digest, "size": len(disk)}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if policy_passed is not None:
        checks = [{"name": "password_ssh_login", "status": "pass" if policy_passed else "fail", "detail": ""}]
        (folder / "policy.json").write_text(json.dumps({"passed": policy_passed, "checks": checks}))
    comps = [{"type": "library", "name": n, "version": v, "purl": f"pkg:deb/debian/{n}@{v}?arch=amd64"}
             for n, v in (packages or {"bash": "5.2"}).items()]
    (folder / "sbom.cdx.json").write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6",
                                                      "components": comps}))
    inputs = BuildInputs(name, version, Input("template", "file:///t.yaml", "0" * 64), {"x": 1}, None)
    body = statement(inputs, subject_files(folder), started="2026-01-01T00:00:00Z",
                     finished="2026-01-01T00:01:00Z")
    (folder / STATEMENT_FILE).write_bytes(dumps(body))
    return folder
