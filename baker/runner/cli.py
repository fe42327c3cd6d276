"""`baker build` with several builds: the child command line of each, --log-file, then the Runner."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Any

from baker.runner.plan import Planned, UsageError
from baker.runner.run import Runner


def open_log_file(path: Path | None) -> contextlib.AbstractContextManager[IO[Any] | None]:
    """--log-file, opened for the run (or a null context); a path that cannot be written is a usage error."""
    if path is None:
        return contextlib.nullcontext(None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write --log-file {path}: {e.strerror or e}") from None


def build_many(args: argparse.Namespace, selected: list[Planned], mode: str | None) -> int:
    """Several builds: each a child `baker build T --only B --json`, -j at a time (baker.runner)."""
    if args.output_dir is not None:
        raise UsageError(f"--output-dir names one build's output, but this run has {len(selected)} builds",
                         hint="leave -o out (each build goes to images/<its name>), or pick one with --only")
    if args.with_children:
        raise UsageError("--with-children works with a single build", hint="run it per template")
    store = None if args.no_store else (args.store.resolve() if args.store else None)
    common: list[str] = []
    for k, v in args.vars:
        common += ["-var", f"{k}={v}"]
    for f in args.var_files:
        common += ["-var-file", str(f)]
    flags = {"--strict": args.strict, "--verbose": args.verbose, "--keep-workdir": args.keep_workdir,
             "--no-store": args.no_store, "--if-changed": args.if_changed, "--force": args.force,
             "--wait-lock": args.wait_lock, "--apt-cache": getattr(args, "apt_cache", False),
             "--checkpoint": getattr(args, "checkpoint", False),
             "--no-checkpoints": getattr(args, "no_checkpoints", False)}
    common += [f for f, on in flags.items() if on]
    common += ["--on-error", args.on_error, "--export-jobs", str(args.export_jobs)]
    if args.timeout:
        common += ["--timeout", f"{args.timeout}s"]
    if args.accel:
        common += ["--accel", args.accel]
    if store is not None:
        common += ["--store", str(store)]

    def child_argv(p: Planned, deps_part: Path | None) -> list[str]:
        argv = [sys.executable, "-m", "baker", "build", str(p.template), "--json", *common]
        if p.build is not None:
            argv += ["--only", p.build]
        if deps_part is not None:
            argv += ["--deps-file", str(deps_part)]
        return argv

    jobs = args.jobs or min(len(selected), os.cpu_count() or 1)
    mode = mode or ("tty" if sys.stdout.isatty() else "plain")
    with open_log_file(args.log_file) as log_file:
        return Runner(selected, child_argv, jobs=jobs, mode=mode, log_file=log_file,
                      deps_file=args.deps_file.resolve() if args.deps_file else None).run()
