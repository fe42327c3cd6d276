"""Sign an image's provenance statement (DSSE) and its SHA256SUMS (OpenSSH) with one ed25519 key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from baker.fsutil import atomic_write
from baker.provenance import ENVELOPE_FILE, SUMS_FILE, dsse, sshsig
from baker.provenance.keys import load_signing_key


def sign_image(statement: Path, sums: Path, key_path: Path, dest: Path) -> list[Path]:
    """Writes provenance.dsse.json and SHA256SUMS.sig into `dest`; returns them."""
    key = load_signing_key(key_path)
    envelope = dsse.sign(statement.read_bytes(), key)
    out = [atomic_write(dest / ENVELOPE_FILE, json.dumps(envelope, indent=2) + "\n")]
    copy = dest / SUMS_FILE
    if copy.resolve() != sums.resolve():
        shutil.copyfile(sums, copy)
    try:
        out.append(sshsig.sign_file(copy, key_path))
    finally:
        if copy.resolve() != sums.resolve():
            copy.unlink()
    return out
