"""Export every target in the template from the shut-down build disk into the staging dir."""

from __future__ import annotations

import os

from baker.state import BuildState
from baker.units import human_size


class ExportImages:
    name = "export"

    def run(self, s: BuildState) -> None:
        from baker.export import ExportContext, run_exports
        from baker.outputs import vm_spec

        t = s.template
        assert s.staging_dir is not None and s.work_dir is not None and s.disk is not None
        export_work = s.work_dir / "export"
        export_work.mkdir(mode=0o700, exist_ok=True)
        vm = vm_spec(t)
        ctx = ExportContext(master=s.disk, output_dir=s.staging_dir, work_dir=export_work, vm=vm, log=s.log)
        jobs = max(1, min(s.options.export_jobs, os.cpu_count() or 1))
        s.exports = run_exports(ctx, [(e.type, e.options) for e in t.exports], jobs=jobs)
        for r in s.exports:
            for f in r.files:
                s.log.info("exported %s %s (%s) in %.1fs", r.type, f.path.name, human_size(f.size), r.seconds)

    def cleanup(self, s: BuildState) -> None:
        pass  # files are in staging, removed unless published
