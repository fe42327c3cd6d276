"""Types every exporter shares, and the plumbing that makes each export all-or-nothing.

An export writes its files under their final names into a hidden staging directory beside the
outputs, and renames them into place together only when the whole export succeeded. So a failed
export leaves none of its files and keeps whatever an earlier build left at those paths; and tools
that embed the file name in what they write (qemu-img's VMDK descriptor) see the real name, not a
temporary one (which a per-file `atomic_path` would give them).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from baker.errors import BakerError
from baker.export.derived import DerivedCache
from baker.fsutil import file_digest, remove
from baker.options import help_field as help_field  # re-exported for the exporters
from baker.proc import run
from baker.units import human_duration, human_size

MiB = 1 << 20
GiB = 1 << 30
QEMU_IMG_HINT = "install qemu-utils (qemu-img)"


class ExportError(BakerError):
    """An export failed; `failures` maps each failed type to its cause (which carries stderr tails)."""

    def __init__(self, message: str, *, failures: dict[str, BaseException] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failures = failures or {}


@dataclass(frozen=True)
class VMSpec:
    """Hardware facts that metadata formats need; the pipeline fills it from the template."""

    name: str
    cpus: int
    memory_mb: int
    disk_size: int
    firmware: str
    machine_type: str = "q35"
    disk_interface: str = "virtio"
    os_type: str = "debian12_64"
    version: str = "0.0.0"
    description: str = ""


@dataclass
class ExportContext:
    master: Path
    output_dir: Path
    work_dir: Path
    vm: VMSpec
    log: logging.Logger
    #: intermediates shared with the run's other exports (run_exports sets it; see derived.py)
    derived: DerivedCache | None = None


@dataclass
class ExportedFile:
    path: Path
    kind: str
    format: str
    size: int
    sha256: str


@dataclass
class ExportResult:
    type: str
    files: list[ExportedFile]
    seconds: float


# --- option checking -------------------------------------------------------------------------------

def _type_problem(value: Any, tp: Any) -> str | None:
    """Why `value` does not fit the annotation `tp`, or None. Covers the types Options may use."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, a) for a in args]
        return None if any(p is None for p in problems) else " or ".join(p for p in problems if p)
    if origin is Literal:
        return None if value in args else f"must be one of {', '.join(map(repr, args))}, got {value!r}"
    if tp is type(None):
        return None if value is None else "must be empty"
    if tp is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be an integer, got {value!r}"
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"must be a number, got {value!r}"
    if tp is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else f"must be a list of strings, got {value!r}"
    if origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in value.items())
        return None if ok else f"must be a map of strings, got {value!r}"
    return None


def check_option_types(type_name: str, options: Any) -> None:
    """Reject values that do not match the Options annotations (API callers bypass the loader)."""
    hints = typing.get_type_hints(type(options))
    for f in dataclasses.fields(options):
        problem = _type_problem(getattr(options, f.name), hints[f.name])
        if problem:
            raise ExportError(f"export {type_name}: option '{f.name}' {problem}")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")


def check_filename(type_name: str, name: str) -> str:
    """Output names are plain file names: no directories, no spaces, nothing a shell or a tar would mangle."""
    if not _SAFE_NAME.match(name) or name.endswith(".part"):
        raise ExportError(f"export {type_name}: '{name}' is not a usable file name",
                          hint="use letters, digits and . _ + @ - only, without a directory part")
    return name


# --- staging ---------------------------------------------------------------------------------------

class Staging:
    """The files of one export, staged beside the outputs and committed together (see module doc)."""

    def __init__(self, output_dir: Path, type_name: str) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir
        self.type_name = type_name
        self.dir = Path(tempfile.mkdtemp(prefix=f".baker-export-{type_name}-", suffix=".part",
                                         dir=output_dir))
        self._files: list[tuple[str, str, str]] = []
        self._locks: list[threading.Lock] = []

    def hold(self, lock: threading.Lock) -> None:
        """Acquire `lock` until this stage is committed or discarded: for a file several exports update
        (the Vagrant catalog), so each reads the previous one's committed version."""
        lock.acquire()
        self._locks.append(lock)

    def _release(self) -> None:
        while self._locks:
            self._locks.pop().release()

    def path(self, filename: str, kind: str, fmt: str) -> Path:
        """Where to write `filename`; it lands at output_dir/filename on commit."""
        check_filename(self.type_name, filename)
        if any(name == filename for name, _, _ in self._files):
            raise ExportError(f"export {self.type_name}: '{filename}' would be written twice")
        self._files.append((filename, kind, fmt))
        return self.dir / filename

    def final(self, filename: str) -> Path:
        return self.output_dir / filename

    def commit(self) -> list[ExportedFile]:
        records = []
        for name, kind, fmt in self._files:
            staged = self.dir / name
            if not staged.is_file():
                raise ExportError(f"export {self.type_name}: '{name}' was not written")
            records.append(ExportedFile(self.final(name), kind, fmt, staged.stat().st_size,
                                        file_digest(staged)))
        # Keep a hard link to each file being replaced, so that if a later rename fails (say, a directory
        # sits at that name) the earlier ones are rolled back to the previous build's files.
        moved: list[tuple[Path, Path | None]] = []
        try:
            for i, (name, _, _) in enumerate(self._files):
                dest = self.final(name)
                backup = None
                if dest.is_file() and not dest.is_symlink():
                    backup = self.dir / f".previous-{i}"
                    os.link(dest, backup)
                os.replace(self.dir / name, dest)
                moved.append((dest, backup))
        except BaseException:
            for dest, backup in reversed(moved):
                if backup is not None:
                    os.replace(backup, dest)
                else:
                    remove(dest)
            raise
        finally:
            remove(self.dir)
            self._release()
        return records

    def discard(self) -> None:
        remove(self.dir)
        self._release()


# --- qemu-img helpers ------------------------------------------------------------------------------

def image_info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """`qemu-img info` as a dict; pass `fmt` whenever known (a fixed VHD probes as raw)."""
    argv: list[str | os.PathLike[str]] = ["qemu-img", "info", "--output=json"]
    if fmt:
        argv += ["-f", fmt]
    out = run([*argv, path], hint=QEMU_IMG_HINT).stdout
    return json.loads(out)


@functools.lru_cache(maxsize=16)
def _master_info(path: str, mtime_ns: int, size: int) -> tuple[str, int]:
    info = image_info(Path(path))
    return info["format"], int(info["virtual-size"])


def master_info(ctx: ExportContext) -> tuple[str, int]:
    """(format, virtual size) of the master, probed once per file version and shared by all exports."""
    st = ctx.master.stat()
    return _master_info(str(ctx.master.resolve()), st.st_mtime_ns, st.st_size)


def read_source(ctx: ExportContext) -> tuple[Path, str]:
    """What conversions read: the master, or (when several exports read it) one flat raw copy of it,
    made once, so the base image's compressed clusters are inflated once instead of per export."""
    fmt = master_info(ctx)[0]
    cache = ctx.derived
    if cache is None or not cache.flatten or fmt == "raw":
        return ctx.master, fmt

    def flatten(path: Path) -> None:
        run(["qemu-img", "convert", "-f", fmt, "-O", "raw", ctx.master, path], hint=QEMU_IMG_HINT)

    return cache.get(("flat", "raw"), flatten, ".raw"), "raw"


def convert(ctx: ExportContext, dest: Path, out_fmt: str, opts: dict[str, str | int] | None = None, *,
            compress: bool = False, source: Path | None = None, source_fmt: str | None = None,
            parallel: bool = False) -> None:
    """qemu-img convert from the master (or its flat copy) or from `source`; output is sparse.

    `parallel`: out-of-order writes with several coroutines (-W -m), which lets qcow2 compress clusters
    on every core; the cluster order in the file then varies between runs, the content does not.
    """
    if source is None:
        source, source_fmt = read_source(ctx)
    argv: list[str | os.PathLike[str]] = ["qemu-img", "convert", "-f", source_fmt or "raw", "-O", out_fmt]
    if compress:
        argv.append("-c")
    if parallel:
        argv += ["-W", "-m", "16"]
    if opts:
        argv += ["-o", ",".join(f"{k}={v}" for k, v in opts.items())]
    run([*argv, source, dest], hint=QEMU_IMG_HINT)


def gzip_flags(ctx: ExportContext, *, level: int | None = None) -> list[str]:
    """GNU tar flags for a gzip'd archive: pigz on every core when installed (at `level`; 0 stores), else
    gzip at its default level."""
    if shutil.which("pigz"):
        threads = ctx.derived.threads if ctx.derived else (os.cpu_count() or 1)
        return ["-I", f"pigz -p {threads}" + (f" -{level}" if level is not None else "")]
    return ["-z"]


def sized_source(ctx: ExportContext, scratch: Path, size: int) -> tuple[Path, str]:
    """A source of `size` bytes: the master itself, or a thin qcow2 overlay that grows it with zeros.

    Lets VHD (whole MiB) and GCE (whole GiB) round sizes up without copying the disk first.
    """
    vsize = master_info(ctx)[1]
    source, fmt = read_source(ctx)
    if size == vsize:
        return source, fmt
    if size < vsize:
        raise ExportError(f"cannot shrink the disk from {vsize} to {size} bytes")
    overlay = scratch / "resized.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", source.resolve(), overlay,
         str(size)], hint=QEMU_IMG_HINT)
    return overlay, "qcow2"


def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def tar_epoch() -> int:
    """mtime for archive members: SOURCE_DATE_EPOCH when set, for reproducible archives."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else int(time.time())


# --- the exporter skeleton -------------------------------------------------------------------------

class BaseExporter:
    """The exporter contract, and its skeleton: validates options, stages outputs, times and logs the
    export; subclasses set `type_name` and `Options` and implement `outputs` and `build`."""

    type_name: ClassVar[str]
    Options: ClassVar[type]
    #: a single-file export only sets this: it writes options.filename, or `<vm name><suffix>`
    suffix: ClassVar[str | None] = None

    def outputs(self, vm: VMSpec, options: Any) -> list[str]:
        """File names this export will write into output_dir (checked for collisions up front)."""
        if self.suffix is None:
            raise NotImplementedError
        return [options.filename or f"{vm.name}{self.suffix}"]

    def shared_outputs(self, vm: VMSpec, options: Any) -> list[str]:
        """Outputs that other exports of the same type may update too (under a lock), e.g. a catalog."""
        return []

    def cost(self, options: Any) -> int:
        """How much of the disk this export has to compress or write on its own (0: reuses what others
        make, 2: a full pass of its own). run_exports starts the costly ones first, so the run does
        not end on one long export started last while the other slot sits idle."""
        return 1

    def validate(self, vm: VMSpec, options: Any) -> None:
        """Semantic option checks beyond types; raise ExportError."""

    def build(self, ctx: ExportContext, options: Any, stage: Staging, scratch: Path) -> None:
        raise NotImplementedError

    def check(self, vm: VMSpec, options: Any) -> None:
        """Everything that can be checked before touching a disk."""
        if not isinstance(options, self.Options):
            raise ExportError(f"export {self.type_name}: options must be {self.Options.__name__}, "
                              f"got {type(options).__name__}")
        check_option_types(self.type_name, options)
        for name in self.outputs(vm, options):
            check_filename(self.type_name, name)
        self.validate(vm, options)

    def export(self, ctx: ExportContext, options: Any = None) -> ExportResult:
        options = self.Options() if options is None else options
        self.check(ctx.vm, options)
        start = time.monotonic()
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        own = None
        if ctx.derived is None:  # called on its own, not from run_exports: a cache for this export
            own = DerivedCache(ctx.work_dir)
            ctx = dataclasses.replace(ctx, derived=own)
        scratch = Path(tempfile.mkdtemp(prefix=f"{self.type_name}-", dir=ctx.work_dir))
        stage = Staging(ctx.output_dir, self.type_name)
        try:
            self.build(ctx, options, stage, scratch)
            files = stage.commit()
        except BakerError:
            stage.discard()
            raise
        except Exception as e:
            stage.discard()
            raise ExportError(f"export {self.type_name}: {e}") from e
        except BaseException:
            stage.discard()
            raise
        finally:
            remove(scratch)
            if own is not None:
                own.close()
        seconds = time.monotonic() - start
        for f in files:
            ctx.log.info("export %s: %s %s (%s)", self.type_name, f.kind, f.path.name, human_size(f.size))
        total = sum(f.size for f in files)
        ctx.log.info("export %s: %d file(s), %s in %s", self.type_name, len(files), human_size(total),
                     human_duration(seconds))
        return ExportResult(self.type_name, files, seconds)
