"""The in-toto Statement v1 with a SLSA provenance v1 predicate: the subjects (every file of the image
with its sha256) bound to the build's inputs (baker.inputs) and when and with what it ran."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

from baker.fsutil import file_digest
from baker.inputs import BuildInputs
from baker.provenance import SIGNATURE_FILES, STATEMENT_FILE
from baker.secrets import MASKER

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:baker:qemu-image-build:v1"


def subject_files(directory: Path) -> list[Path]:
    """Every regular file of an image dir except the provenance and its signatures."""
    skip = {STATEMENT_FILE, *SIGNATURE_FILES}
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name not in skip)


def statement(inputs: BuildInputs, subjects: list[Path], *, started: str, finished: str,
              internal: dict[str, Any] | None = None, known: dict[str, str] | None = None) -> dict[str, Any]:
    """`known`: file name → sha256 the exports already computed (hashing a 4 GiB disk again costs
    seconds); every other subject is hashed here."""
    known = known or {}
    deps = [{"uri": d.uri, "digest": {"sha256": d.sha256}, "name": d.kind} for d in inputs.dependencies()]
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": p.name, "digest": {"sha256": known.get(p.name) or file_digest(p)}}
                    for p in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "name": inputs.name, "version": inputs.version,
                    "template": {"uri": inputs.template.uri, "digest": {"sha256": inputs.template.sha256}},
                    "variables": inputs.variables,
                },
                "internalParameters": internal or {},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": f"urn:baker:builder:{socket.gethostname()}", "version": inputs.tools},
                "metadata": {"invocationId": str(uuid.uuid4()), "startedOn": started, "finishedOn": finished},
            },
        },
    }
    return MASKER.mask_obj(body)


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
