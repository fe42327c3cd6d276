"""Private work dir (keys, seed, build disk, sockets) and a staging dir beside the output dir."""

from __future__ import annotations

import tempfile
from pathlib import Path

from baker.fsutil import private_dir, remove
from baker.state import BuildState


class PrepareDirs:
    name = "prepare"

    def run(self, s: BuildState) -> None:
        s.work_dir = private_dir(prefix=f"baker-{s.template.name}-")
        out = s.options.output_dir
        out.parent.mkdir(parents=True, exist_ok=True)
        # staging sits on the output's filesystem so publishing is a rename, never a copy
        s.staging_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        s.staging_dir.chmod(0o755)
        s.log.debug("work dir %s, staging %s", s.work_dir, s.staging_dir)

    def cleanup(self, s: BuildState) -> None:
        if s.staging_dir is not None:
            remove(s.staging_dir)
        if s.work_dir is not None and not s.options.keep_workdir:
            remove(s.work_dir)
