"""Export every target in the template from the shut-down build disk into the staging dir."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from baker.state import BuildState
from baker.units import human_size

#: seconds between export progress events (bytes written so far; the reporter thins them off a terminal)
PROGRESS_EVERY = 1.0


def _written(folder: Path) -> int:
    """Bytes really written under `folder` (allocated blocks: sparse disks count what they hold)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass  # a staging file renamed or removed between listing and stat
    return total


def report_progress(folder: Path, log: logging.Logger, stop: threading.Event,
                    every: float = PROGRESS_EVERY) -> None:
    """`export: 812.0 MiB, 45.0 MiB/s` while the exports write into `folder`, until `stop` is set."""
    started = time.monotonic()
    while not stop.wait(every):
        done = _written(folder)
        rate = done / max(time.monotonic() - started, 1e-3)
        log.info("exporting: %s written", human_size(done), extra={"progress": {
            "what": "export", "done": done, "total": None, "rate": round(rate), "eta": None}})


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
        stop = threading.Event()
        watcher = threading.Thread(target=report_progress, args=(s.staging_dir, s.log, stop), daemon=True,
                                   name="baker-export-progress")
        watcher.start()
        try:
            s.exports = run_exports(ctx, [(e.type, e.options) for e in t.exports], jobs=jobs)
        finally:
            stop.set()
            watcher.join(timeout=5)
        for r in s.exports:
            for f in r.files:
                s.log.info("exported %s %s (%s) in %.1fs", r.type, f.path.name, human_size(f.size), r.seconds)

    def cleanup(self, s: BuildState) -> None:
        pass  # files are in staging, removed unless published
