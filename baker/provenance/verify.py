"""Verify an image's files against its signed provenance: every digest, the DSSE signature, the
OpenSSH signature over SHA256SUMS, and the recorded policy and scan results. Works on a store version
and on an exported or published folder alike (both are a mapping file name -> path)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baker.errors import BakerError
from baker.fsutil import file_digest
from baker.provenance import ENVELOPE_FILE, STATEMENT_FILE, SUMS_FILE, SUMS_SIG_FILE, dsse, sshsig
from baker.provenance.keys import read_allowed_signers

_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # each names the file it is about
    checked: list[str] = field(default_factory=list)
    signer: str | None = None
    signed: bool = False
    policy_passed: bool | None = None
    scan_passed: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BakerError(f"{path.name}: not readable JSON: {e}") from e


def verify_files(files: dict[str, Path], allowed_signers: Path | None, *, only: str | None = None) -> Report:
    """`only`: check just this file's digest (a path to one artifact), the signatures still in full."""
    r = Report()
    statement: Any = None
    envelope_path = files.get(ENVELOPE_FILE)
    if envelope_path is None:
        r.problems.append(f"{ENVELOPE_FILE}: missing: the image is not signed "
                          "(baker sign NAME VERSION --key K)")
    elif allowed_signers is None:
        r.problems.append(f"{ENVELOPE_FILE}: no trusted keys to check the signature against "
                          "(--allowed-signers FILE, or <store>/allowed_signers)")
    else:
        try:
            payload, key = dsse.verify(_json(envelope_path), read_allowed_signers(allowed_signers))
            statement = json.loads(payload)
            r.signed, r.signer = True, f"{key.principal} {key.keyid}"
        except (BakerError, ValueError) as e:
            r.problems.append(f"{ENVELOPE_FILE}: {e}")
    if statement is None and STATEMENT_FILE in files:
        statement = _json(files[STATEMENT_FILE])  # unsigned: digests can still be checked
    if statement is None:
        r.problems.append(f"{STATEMENT_FILE}: missing: no provenance to check the files against")
        return r
    if STATEMENT_FILE in files and r.signed and _json(files[STATEMENT_FILE]) != statement:
        r.problems.append(f"{STATEMENT_FILE}: differs from the signed statement in {ENVELOPE_FILE}")

    subjects = {s.get("name"): s.get("digest", {}).get("sha256") for s in statement.get("subject", [])}
    for name, want in sorted(subjects.items()):
        if only is not None and name not in (only, SUMS_FILE, "policy.json", "scan.json"):
            continue
        path = files.get(name)
        if path is None or not path.is_file():
            r.problems.append(f"{name}: missing (listed in the provenance)")
            continue
        got = file_digest(path)
        r.checked.append(name)
        if got != want:
            r.problems.append(f"{name}: sha256 mismatch: {got}, the provenance says {want}")
    if only is not None and only not in subjects:
        r.problems.append(f"{only}: not listed in the provenance of this image")

    sums = files.get(SUMS_FILE)
    if sums is not None:
        for line in sums.read_text().splitlines():
            m = _SUMS_LINE.match(line)
            if m and subjects.get(m.group(2)) not in (None, m.group(1)):
                r.problems.append(f"{m.group(2)}: SHA256SUMS and the provenance disagree")
        sig = files.get(SUMS_SIG_FILE)
        if sig is None:
            r.problems.append(f"{SUMS_SIG_FILE}: missing: SHA256SUMS is not signed")
        elif allowed_signers is not None:
            try:
                sshsig.verify_file(sums, sig, allowed_signers)
            except BakerError as e:
                r.problems.append(e.message)

    if "policy.json" in files:
        policy = _json(files["policy.json"])
        r.policy_passed = bool(policy.get("passed"))
        if not r.policy_passed:
            failed = ", ".join(c["name"] for c in policy.get("checks", []) if c.get("status") == "fail")
            r.problems.append(f"policy.json: the policy failed ({failed})")
    if "scan.json" in files:
        scan = _json(files["scan.json"])
        r.scan_passed = bool(scan.get("passed"))
        if not r.scan_passed:
            r.problems.append(f"scan.json: the scanner exited with {scan.get('exit_code')}")
    return r


def folder_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
