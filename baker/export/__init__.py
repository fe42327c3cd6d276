"""Export one built disk to every hypervisor's format: one module per target, registered by type name.

`run_exports` runs several exports in parallel threads. Each export is all-or-nothing (see
`base.Staging`): a failed one leaves none of its files and keeps earlier artifacts at its paths,
the others complete, and then one ExportError names every failure. SHA256SUMS is refreshed either way.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from baker.export.base import (
    BaseExporter,
    ExportContext,
    ExportedFile,
    ExportError,
    ExportResult,
    VMSpec,
)
from baker.export.derived import DerivedCache, OrderedSlots
from baker.export.libvirt import LibvirtExporter
from baker.export.ovf import OvaExporter, OvfExporter
from baker.export.qcow2 import Qcow2Exporter
from baker.export.raw import GceExporter, RawExporter
from baker.export.vagrant import VagrantExporter
from baker.export.vhd import VhdExporter
from baker.export.vhdx import VhdxExporter
from baker.export.vmdk import VmdkExporter
from baker.fsutil import atomic_write, file_digest

__all__ = [
    "EXPORTERS",
    "BaseExporter",
    "ExportContext",
    "ExportError",
    "ExportResult",
    "ExportedFile",
    "VMSpec",
    "run_exports",
    "write_sha256sums",
]

EXPORTERS: dict[str, type[BaseExporter]] = {
    cls.type_name: cls
    for cls in (Qcow2Exporter, RawExporter, GceExporter, VmdkExporter, OvaExporter, OvfExporter,
                VhdExporter, VhdxExporter, VagrantExporter, LibvirtExporter)
}

SUMS_NAME = "SHA256SUMS"
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_sums_lock = threading.Lock()


def write_sha256sums(output_dir: Path, files: list[ExportedFile]) -> Path:
    """Refresh output_dir/SHA256SUMS (coreutils format, `sha256sum -c` reads it): new entries replace
    old ones of the same name, entries of files that no longer exist are dropped."""
    path = output_dir / SUMS_NAME
    with _sums_lock:
        entries: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                m = _SUMS_LINE.match(line)
                if m and (output_dir / m.group(2)).is_file():
                    entries[m.group(2)] = m.group(1)
        for f in files:
            if f.path.parent.resolve() != output_dir.resolve():
                raise ExportError(f"{f.path} is outside {output_dir}")
            entries[f.path.name] = f.sha256
        atomic_write(path, "".join(f"{h}  {n}\n" for n, h in sorted(entries.items())))
    return path


def _exporter(type_name: str) -> BaseExporter:
    cls = EXPORTERS.get(type_name)
    if cls is None:
        raise ExportError(f"unknown export type '{type_name}'",
                          hint=f"known types: {', '.join(sorted(EXPORTERS))}")
    return cls()


def _cost(type_name: str, options: Any) -> int:
    exporter = _exporter(type_name)
    return exporter.cost(exporter.Options() if options is None else options)


def plan_outputs(vm: VMSpec, specs: list[tuple[str, Any]]) -> dict[str, str]:
    """file name -> export type, after checking every spec's options; two exports may not share a file."""
    owners: dict[str, str] = {}
    shared: set[tuple[str, str]] = set()
    for type_name, options in specs:
        exporter = _exporter(type_name)
        opts = exporter.Options() if options is None else options
        exporter.check(vm, opts)
        mine = {(type_name, n) for n in exporter.shared_outputs(vm, opts)}
        for name in exporter.outputs(vm, opts):
            if (type_name, name) in mine and (type_name, name) in shared:
                continue
            if name == SUMS_NAME or name in owners:
                other = owners.get(name, "checksums")
                raise ExportError(f"exports {other} and {type_name} both write '{name}'",
                                  hint="set a different filename on one of them")
            owners[name] = type_name
        shared |= mine
    return owners


def run_exports(ctx: ExportContext, specs: list[tuple[str, Any]], *, jobs: int = 2) -> list[ExportResult]:
    """Run every export (up to `jobs` at once); results keep the order of `specs`.

    Options are checked before any disk work, so a typo fails fast. If some exports fail, the others
    still finish and are listed in SHA256SUMS; then ExportError names each failed type with its cause.
    """
    plan_outputs(ctx.vm, specs)
    results: list[ExportResult | None] = [None] * len(specs)
    failures: dict[str, BaseException] = {}
    own = None
    if ctx.derived is None:
        # one thread per export, at most `jobs` of them working: one that waits for a disk another
        # export is making (derived.py) gives its slot away meanwhile
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        own = DerivedCache(ctx.work_dir, flatten=len(specs) > 1, slots=OrderedSlots(jobs))
        ctx = dataclasses.replace(ctx, derived=own)
    cache = ctx.derived
    assert cache is not None

    # costly exports first (see BaseExporter.cost), so the run does not end on one started last
    order = sorted(range(len(specs)), key=lambda i: -_cost(*specs[i]))
    rank = {i: r for r, i in enumerate(order)}

    def one(i: int, type_name: str, options: Any) -> None:
        try:
            with cache.slot(rank[i]):
                results[i] = _exporter(type_name).export(ctx, options)
        except Exception as e:
            ctx.log.error("export %s failed: %s", type_name, e)
            failures[f"{type_name}#{i}" if type_name in failures else type_name] = e

    try:
        workers = max(1, len(specs) if own is not None else jobs)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export") as pool:
            for future in [pool.submit(one, i, *specs[i]) for i in order]:
                future.result()
    finally:
        if own is not None:
            own.close()
    done = [r for r in results if r is not None]
    files = [f for r in done for f in r.files]
    names = [f.path.name for f in files]
    for f in files:  # a file several exports updated (a shared catalog): record its final state
        if names.count(f.path.name) > 1:
            f.size, f.sha256 = f.path.stat().st_size, file_digest(f.path)
    write_sha256sums(ctx.output_dir, files)
    if failures:
        detail = "\n".join(f"{t}: {e}" for t, e in failures.items())
        raise ExportError(f"{len(failures)} export(s) failed: {', '.join(failures)}\n{detail}",
                          failures=failures, hint=next(
                              (h for e in failures.values() if (h := getattr(e, "hint", None))), None))
    return done
