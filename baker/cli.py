"""The `baker` command: subcommands, flags and exit codes; the work happens elsewhere.

Exit codes: 0 success · 1 build failed · 2 invalid template or usage · 3 not promotable (promote
refused) · 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import baker
from baker.errors import BakerError, TemplateError, TemplateErrors
from baker.units import parse_duration


def _var(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    k, v = text.split("=", 1)
    return k.strip(), v


def _add_template_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("template", type=Path, help="path to the YAML template")
    p.add_argument("-var", "--var", dest="vars", action="append", type=_var, default=[], metavar="NAME=VALUE",
                   help="set a variable (highest precedence); repeatable")
    p.add_argument("-var-file", "--var-file", dest="var_files", action="append", type=Path, default=[],
                   metavar="FILE", help="YAML file of variable values; repeatable, later files win")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="baker", description="Bake golden VM images with QEMU.")
    p.add_argument("--version", action="version", version=f"baker {baker.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build the image a template describes",
                       description="Boot the source under QEMU, provision over SSH, shut down, export.")
    _add_template_args(b)
    b.add_argument("--output-dir", "-o", type=Path, help="where artifacts go (default: images/<name>)")
    b.add_argument("--on-error", "-on-error", choices=["cleanup", "abort"], default="cleanup",
                   help="abort: on failure keep the VM up for debugging (SSH command shown) until Ctrl-C")
    b.add_argument("--json", action="store_true", help="JSON event stream on stdout (one object per line)")
    b.add_argument("--plain", action="store_true", help="timestamped lines even on a terminal")
    b.add_argument("--verbose", "-v", action="store_true", help="show debug output")
    b.add_argument("--keep-workdir", action="store_true", help="keep the private work dir after the build")
    b.add_argument("--export-jobs", type=int, default=2, help="exports run in parallel (default 2)")
    b.add_argument("--timeout", help="give up after this long, e.g. 2h (exit code 143)")
    b.add_argument("--store", type=Path, help="record the image in this store (default: $BAKER_STORE or "
                                              "~/.local/share/baker/store)")
    b.add_argument("--no-store", action="store_true", help="do not record the image in a store")

    v = sub.add_parser("validate", help="check a template without building",
                       description="Load, render and validate a template; errors name file:line:col.")
    _add_template_args(v)

    i = sub.add_parser("inspect", help="show the resolved template and the steps a build runs")
    _add_template_args(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("cache", help="list or prune the verified download cache")
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cl = csub.add_parser("list", help="cached files, most recently used first")
    cl.add_argument("--json", action="store_true")
    cp = csub.add_parser("prune", help="delete cached files (partial downloads are always removed)")
    cp.add_argument("--older-than", metavar="DURATION", help="not used for this long, e.g. 30d or 720h")
    cp.add_argument("--keep", type=int, metavar="N", help="keep the N most recently used files")
    cp.add_argument("--max-size", metavar="SIZE", help="remove least recently used until within SIZE")
    _register_lifecycle(sub)
    return p


def _register_lifecycle(sub) -> None:
    """The store, provenance and SBOM packages define their own subcommands (each sets `func`)."""
    from baker.provenance.cli import register as provenance_commands
    from baker.sbom.cli import register as sbom_commands
    from baker.store.cli import register as store_commands

    for register in (store_commands, provenance_commands, sbom_commands):
        register(sub)


def _load(args: argparse.Namespace):
    from baker.template import load_template

    return load_template(args.template, cli_vars=dict(args.vars), var_files=list(args.var_files),
                         environ=os.environ)


def cmd_validate(args: argparse.Namespace) -> int:
    t = _load(args)
    exports = ", ".join(e.type for e in t.exports) or "none"
    print(f"{args.template}: OK ({t.name}: {len(t.provisioners)} provisioners; exports: {exports})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from baker.steps import plan_steps
    from baker.template import template_to_dict

    t = _load(args)
    data = template_to_dict(t)
    steps = [s.name for s in plan_steps(t)]
    if args.json:
        print(json.dumps({"template": data, "steps": steps}, indent=2, default=str))
        return 0
    import yaml

    print(f"# {args.template} (sha256 {t.sha256[:16]}...)")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    print("\n# steps")
    for n, s in enumerate(steps, 1):
        print(f"{n:2d}. {s}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from baker.sources.cache import DownloadCache
    from baker.units import human_size, parse_size

    cache = DownloadCache()
    if args.cache_command == "list":
        entries = cache.list()
        if args.json:
            print(json.dumps([{"path": str(e.path), "sha256": e.sha256, "size": e.size,
                               "last_used": e.last_used, "urls": list(e.urls)} for e in entries], indent=2))
            return 0
        for e in entries:
            used = datetime.fromtimestamp(e.last_used, UTC).strftime("%Y-%m-%d %H:%M")
            print(f"{e.sha256[:16]}  {human_size(e.size):>10}  {used}  {', '.join(e.urls) or '-'}")
        print(f"{len(entries)} files, {human_size(sum(e.size for e in entries))} in {cache.root}")
        return 0
    older = None
    if args.older_than:
        text = args.older_than.strip()
        older = float(text[:-1]) * 86400 if text.endswith("d") else parse_duration(text)
    removed = cache.prune(older_than=older, keep=args.keep,
                          max_bytes=parse_size(args.max_size) if args.max_size else None)
    for p in removed:
        print(f"removed {p}")
    print(f"{len(removed)} files removed")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from baker.build import run_build
    from baker.output import Reporter
    from baker.state import BuildOptions

    mode = "json" if args.json else ("plain" if args.plain else None)
    reporter = Reporter(mode)
    t = _load(args)
    out = args.output_dir or Path("images") / t.name
    options = BuildOptions(output_dir=out.resolve(), on_error=args.on_error, keep_workdir=args.keep_workdir,
                           export_jobs=args.export_jobs)
    if not args.no_store:
        from baker.store import default_store_path

        options.store = (args.store or default_store_path()).resolve()
    if args.timeout:
        seconds = parse_duration(args.timeout)
        timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    try:
        outcome = run_build(t, options, reporter, verbose=args.verbose)
    finally:
        reporter.close()
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = getattr(args, "func", None) or {"build": cmd_build, "validate": cmd_validate,
                                              "inspect": cmd_inspect, "cache": cmd_cache}[args.command]
    try:
        return handler(args)
    except (TemplateError, TemplateErrors) as e:
        print(f"error: {e}" if isinstance(e, TemplateError) else f"error: template is invalid:\n{e}",
              file=sys.stderr)
        return 2
    except BakerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
