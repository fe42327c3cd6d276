"""The provenance statement over every file of the image, signed when the template has `sign:`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from baker.fsutil import atomic_write
from baker.state import BuildState


class WriteProvenance:
    name = "provenance"

    def run(self, s: BuildState) -> None:
        from baker.inputs import collect
        from baker.provenance import STATEMENT_FILE, SUMS_FILE
        from baker.provenance.sign import sign_image
        from baker.provenance.statement import dumps, statement, subject_files

        assert s.staging_dir is not None
        t = s.template
        inputs = collect(t, base_url=s.base_url, base_sha256=s.base_sha256, qemu_version=s.qemu_version)
        internal = {"accelerator": getattr(s.accel, "accel", None), "cpus": t.machine.cpus,
                    "memory_mb": t.machine.memory, "firmware": t.machine.firmware,
                    "exports": [e.type for e in t.exports],
                    "fingerprint": s.fingerprint.digest if s.fingerprint else None,
                    **({"checkpoints": s.checkpoint.record()} if s.checkpoint is not None else {})}
        known = {f.path.name: f.sha256 for r in s.exports for f in r.files}
        body = statement(inputs, subject_files(s.staging_dir), started=_utc(s.started_at),
                         finished=_utc(datetime.now(UTC)), internal=internal, known=known)
        path = atomic_write(s.staging_dir / STATEMENT_FILE, dumps(body))
        if t.sign is not None:
            sign_image(path, s.staging_dir / SUMS_FILE, Path(t.sign.key), s.staging_dir)
            s.log.info("signed the provenance and SHA256SUMS with %s", t.sign.key)

    def cleanup(self, s: BuildState) -> None:
        pass


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
