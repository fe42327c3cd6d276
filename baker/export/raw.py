"""raw (a sparse disk image) and gce (disk.raw in a gzip'd sparse oldgnu tar, as Google's import wants)."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    GiB,
    Staging,
    convert,
    gzip_flags,
    help_field,
    master_info,
    read_source,
    round_up,
    sized_source,
)
from baker.export.derived import copy_file
from baker.proc import run


@dataclass
class RawOptions:
    filename: str | None = help_field(None, "output file name (default: <name>.raw)")


class RawExporter(BaseExporter):
    """A plain raw disk; sparse on filesystems with holes (copy it with `cp --sparse`/`rsync -S`)."""

    type_name = "raw"
    Options: ClassVar[type] = RawOptions
    suffix = ".raw"

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        (name,) = self.outputs(ctx.vm, options)
        dest = stage.path(name, "disk", "raw")
        source, fmt = read_source(ctx)
        if fmt == "raw" and source != ctx.master and ctx.derived is not None:
            ctx.derived.publish(source, dest)  # the run's flat copy is this export already
        else:
            convert(ctx, dest, "raw")


@dataclass
class GceOptions:
    filename: str | None = help_field(None, "output file name (default: <name>.tar.gz)")
    round_to_gib: bool = help_field(
        True, "grow disk.raw to a whole number of GiB, which GCE image import requires (zeros at the end; "
        "a GPT's backup header then is not at the end, which GCE's and most guests' tools repair)")


class GceExporter(BaseExporter):
    """Google Compute Engine image: one member `disk.raw`, GNU sparse, gzip'd (`tar --format=oldgnu -Sz`)."""

    type_name = "gce"
    Options: ClassVar[type] = GceOptions
    suffix = ".tar.gz"

    def cost(self, options: Any) -> int:
        return 2  # a raw copy of its own, then gzip over all of it

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        (name,) = self.outputs(ctx.vm, options)
        size = master_info(ctx)[1]
        if options.round_to_gib:
            size = round_up(size, GiB)
        raw = scratch / "disk.raw"
        source, fmt = sized_source(ctx, scratch, size)
        if fmt == "raw" and source != ctx.master and os.path.getsize(source) == size:
            copy_file(source, raw)  # the run's flat copy already has the right size: tar a private copy
        else:
            convert(ctx, raw, "raw", source=source, source_fmt=fmt)
            if os.path.getsize(raw) != size:
                os.truncate(raw, size)
        dest = stage.path(name, "disk", "tar.gz")
        # GNU tar writes sparse members (python's tarfile cannot): seconds instead of minutes, and smaller;
        # pigz gzips on every core.
        run(["tar", "--format=oldgnu", "--sparse", "--owner=0", "--group=0", "--numeric-owner",
             *gzip_flags(ctx), "-cf", dest, "-C", scratch, "disk.raw"], hint="install GNU tar")
        with tarfile.open(dest, "r:gz") as tf:
            first = tf.next()  # only the header: listing all would inflate the whole disk
        if first is None or first.name != "disk.raw" or first.size != size:
            raise ExportError(f"export gce: {name} does not hold exactly disk.raw of {size} bytes")
