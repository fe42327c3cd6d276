"""qcow2: a standalone (backing-free), sparse, compat 1.1 copy of the master for KVM/OpenStack/Proxmox."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportError,
    Staging,
    VMSpec,
    convert,
    help_field,
    image_info,
    master_info,
)


@dataclass
class Qcow2Options:
    filename: str | None = help_field(None, "output file name (default: <name>.qcow2)")
    compress: bool = help_field(
        False, "compress every cluster: a smaller download; guests rewrite clusters uncompressed")
    compression_type: Literal["zlib", "zstd"] = help_field(
        "zlib", "zlib reads everywhere; zstd is faster but sets an incompatible header bit that QEMU < 5.1 "
        "and third-party readers (libqcow, older Proxmox/OpenStack tooling) refuse")
    cluster_size: int = help_field(65536, "cluster size in bytes, a power of two from 512 to 2 MiB")
    preallocation: Literal["off", "metadata"] = help_field(
        "off", "metadata: preallocate L2 tables for write speed (not with compress)")


def qcow2_entry(ctx: ExportContext, *, compress: bool = False, compression_type: str = "zlib",
                cluster_size: int = 65536, preallocation: str = "off") -> Path:
    """The run's standalone qcow2 with these parameters, converted once (see derived.py) and checked.

    Compressed clusters are deflated on every core (qemu-img -W -m).
    """
    assert ctx.derived is not None
    opts: dict[str, str | int] = {"compat": "1.1", "cluster_size": cluster_size, "lazy_refcounts": "off",
                                  "preallocation": preallocation}
    if compress:
        opts["compression_type"] = compression_type

    def make(path: Path) -> None:
        convert(ctx, path, "qcow2", opts, compress=compress, parallel=compress)
        check_qcow2(ctx, path)

    key = ("qcow2", compress, compression_type if compress else None, cluster_size, preallocation)
    return ctx.derived.get(key, make, ".qcow2")


def check_qcow2(ctx: ExportContext, dest: Path) -> None:
    """The qcow2 says what we asked for: standalone, the master's size, compat 1.1, not corrupt."""
    info = image_info(dest, "qcow2")
    data = info.get("format-specific", {}).get("data", {})
    problems = []
    if "backing-filename" in info:
        problems.append("it has a backing file")
    if int(info["virtual-size"]) != master_info(ctx)[1]:
        problems.append(f"virtual size {info['virtual-size']} differs from the master's")
    if data.get("compat") != "1.1" or data.get("corrupt"):
        problems.append(f"unexpected header {data}")
    if problems:
        raise ExportError(f"qcow2 written to {dest.name} is wrong: {'; '.join(problems)}")


def write_qcow2(ctx: ExportContext, dest: Path, *, compress: bool = False, compression_type: str = "zlib",
                cluster_size: int = 65536, preallocation: str = "off") -> None:
    """A standalone qcow2 of the master at `dest` (an output: linked once from the run's entry, or copied)."""
    entry = qcow2_entry(ctx, compress=compress, compression_type=compression_type,
                        cluster_size=cluster_size, preallocation=preallocation)
    assert ctx.derived is not None
    ctx.derived.publish(entry, dest)


class Qcow2Exporter(BaseExporter):
    type_name = "qcow2"
    Options: ClassVar[type] = Qcow2Options
    suffix = ".qcow2"

    def cost(self, options: Any) -> int:
        return 2 if options.compress else 1  # the compressed qcow2 others (vmdk, boxes) derive from

    def validate(self, vm: VMSpec, options: Any) -> None:
        cs = options.cluster_size
        if cs < 512 or cs > 2 << 20 or cs & (cs - 1):
            raise ExportError(f"export qcow2: cluster_size {cs} must be a power of two from 512 to 2097152")
        if options.compress and options.preallocation != "off":
            raise ExportError("export qcow2: compress and preallocation cannot be combined",
                              hint="qemu-img refuses it; pick one")

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        (name,) = self.outputs(ctx.vm, options)
        if options.compress and options.compression_type == "zstd":
            ctx.log.warning("export qcow2: zstd compression needs QEMU >= 5.1 to read the image")
        write_qcow2(ctx, stage.path(name, "disk", "qcow2"), compress=options.compress,
                    compression_type=options.compression_type, cluster_size=options.cluster_size,
                    preallocation=options.preallocation)
