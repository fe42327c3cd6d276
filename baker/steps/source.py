"""Fetch the base (cloud image or ISO) through the verified cache; create the build disk."""

from __future__ import annotations

import os
import time

from baker.errors import BakerError
from baker.state import BuildState
from baker.units import human_size, parse_size


class FetchSource:
    name = "fetch-source"

    def run(self, s: BuildState) -> None:
        from baker.fsutil import file_digest
        from baker.sources.cache import DownloadCache
        from baker.sources.source import fetch_source, source_checksum_spec, source_urls

        chosen = s.template.source.cloud_image or s.template.source.iso
        if chosen is None:
            raise BakerError("the template has no source", hint="add source.cloud_image or source.iso")
        base_dir = s.template.path.parent  # relative paths are relative to the template, like every path
        started, last = time.monotonic(), [0.0]

        def progress(done: int, total: int | None) -> None:
            """A `progress` event a second (the reporter shows it live or thins it out to lines)."""
            now = time.monotonic()
            if now - last[0] < 1 and done != total:
                return
            last[0] = now
            rate = done / max(now - started, 1e-3)
            eta = (total - done) / rate if total and rate > 0 else None
            pct = f" ({done * 100 // total}%)" if total else ""
            s.log.info("downloading: %s%s", human_size(done), pct, extra={"progress": {
                "what": "download", "done": done, "total": total, "rate": round(rate),
                "eta": round(eta, 1) if eta is not None else None}})

        # BAKER_DOWNLOAD_TIMEOUT: seconds without data before a download is abandoned (default 60)
        timeout = float(os.environ.get("BAKER_DOWNLOAD_TIMEOUT", "60"))
        s.base_image = fetch_source(chosen, DownloadCache(), base_dir=base_dir, progress=progress,
                                    timeout=timeout, cancel=s.cancel)
        s.base_url = source_urls(chosen, base_dir)[0]
        s.base_checksum = source_checksum_spec(chosen, base_dir)
        s.base_sha256 = file_digest(s.base_image)
        s.log.info("base image %s (%s)", s.base_image, human_size(s.base_image.stat().st_size))

    def cleanup(self, s: BuildState) -> None:
        pass  # the cache keeps verified files only; nothing per-build to undo


class CreateDisk:
    name = "create-disk"

    def run(self, s: BuildState) -> None:
        from baker.sources.disk import create_empty_disk, prepare_build_disk

        assert s.work_dir is not None and s.base_image is not None
        m = s.template.machine
        size = parse_size(m.disk_size)
        dest = s.work_dir / "disk.qcow2"
        if s.template.source.cloud_image is not None:
            ci = s.template.source.cloud_image
            prepare_build_disk(s.base_image, dest, mode=ci.disk_mode, size=size, fmt=ci.format)
        else:
            create_empty_disk(dest, size)
        s.disk = dest

    def cleanup(self, s: BuildState) -> None:
        pass  # lives in the work dir, removed with it
