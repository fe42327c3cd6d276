"""Record the published image as a new immutable version in the store (skipped with --no-store)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from baker.state import BuildState


class RecordInStore:
    name = "store"

    def run(self, s: BuildState) -> None:
        from baker.store.record import record_dir

        if s.options.store is None:
            s.log.info("--no-store: not recording the image in a store")
            return
        out = s.options.output_dir
        version = s.template.version or datetime.now(UTC).strftime("0.0.0-%Y%m%dT%H%M%SZ")
        manifest = json.loads((out / "manifest.json").read_text())
        v = record_dir(s.options.store, s.template.name, version, out, manifest, base_sha256=s.base_sha256)
        parent = f", built from {v.parent_name}@{v.parent_version}" if v.parent_name else ""
        s.log.info("recorded %s in the store %s%s", v.ref, s.options.store, parent)

    def cleanup(self, s: BuildState) -> None:
        pass
