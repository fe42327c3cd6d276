"""manifest.json beside the artifacts, then publish staging → output dir in one atomic exchange."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import baker
from baker.fsutil import atomic_write
from baker.secrets import MASKER
from baker.state import BuildState

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class RecordManifest:
    name = "record"

    def run(self, s: BuildState) -> None:
        assert s.staging_dir is not None
        t = s.template
        if s.machine is not None and s.machine.spec.serial_log.exists():
            shutil.copyfile(s.machine.spec.serial_log, s.staging_dir / "serial.log")
        artifacts = []
        for r in s.exports:
            for f in r.files:
                artifacts.append({"export": r.type, "file": f.path.name, "kind": f.kind, "format": f.format,
                                  "size": f.size, "sha256": f.sha256})
        values = {k: ("<sensitive>" if k in t.sensitive_values else v) for k, v in t.values.items()}
        manifest = {
            "name": t.name,
            "version": t.version,
            "description": t.description,
            "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "template": {"path": str(t.path), "sha256": t.sha256},
            "variables": values,
            "source": {"url": s.base_url, "checksum": s.base_checksum, "sha256": s.base_sha256,
                       **({"image": s.parent.ref.text, "parent": {"name": s.parent.name,
                                                                   "version": s.parent.version}}
                          if s.parent is not None else {})},
            "machine": {
                "accelerator_requested": s.accel.requested if s.accel else None,
                "accelerator": s.accel.accel if s.accel else None,
                "accelerator_note": s.accel.reason if s.accel else "",
                "cpus": t.machine.cpus, "memory_mb": t.machine.memory, "disk_size": t.machine.disk_size,
                "firmware": t.machine.firmware, "machine_type": t.machine.machine_type,
                "qemu_argv": s.machine.argv if s.machine else None,
            },
            "guest": {"ssh_host_key_used_during_build": s.keys.host_public if s.keys else None,
                      "build_key_public": s.keys.client_public if s.keys else None,
                      "generalized": t.generalize.enabled},
            "artifacts": artifacts,
            "exports": [{"type": r.type, "seconds": round(r.seconds, 2)} for r in s.exports],
            "steps": [{"step": st.name, "seconds": st.seconds} for st in s.timings if st.status == "ok"],
            # what --if-changed compares a later build with (baker.incremental)
            "inputs": s.fingerprint.to_dict() if s.fingerprint is not None else None,
            # the checkpoint layers the disk was built from (baker.checkpoint), by key and sha256
            "checkpoints": s.checkpoint.record() if s.checkpoint is not None else None,
            "tools": {"baker": baker.__version__, "qemu": s.qemu_version,
                      "python": platform.python_version()},
        }
        s.manifest_path = atomic_write(s.staging_dir / "manifest.json",
                                       json.dumps(MASKER.mask_obj(manifest), indent=2) + "\n")
        if s.log_file is not None and s.log_file.exists():
            shutil.copyfile(s.log_file, s.staging_dir / "build.log")

    def cleanup(self, s: BuildState) -> None:
        pass


class Publish:
    """Swap staging and output dir atomically (renameat2 RENAME_EXCHANGE): readers never see a mix."""

    name = "publish"

    def run(self, s: BuildState) -> None:
        assert s.staging_dir is not None
        out = s.options.output_dir
        if out.exists():
            _exchange(s.staging_dir, out)  # staging now holds the previous build, removed by cleanup
        else:
            os.rename(s.staging_dir, out)
            s.staging_dir = None
        s.log.info("published %s", out)

    def cleanup(self, s: BuildState) -> None:
        pass


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return
    # filesystems without RENAME_EXCHANGE: two renames, the old dir kept until the new one is in place
    old = Path(tempfile.mkdtemp(prefix=f".{b.name}.old-", dir=b.parent))
    os.rmdir(old)
    os.rename(b, old)
    os.rename(a, b)
    os.rename(old, a)
