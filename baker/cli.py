"""The `baker` command: subcommands, flags and exit codes; the work happens elsewhere.

Exit codes (baker.errors.EXIT_*): 0 success · 1 build failed · 2 invalid template or usage ·
3 not promotable (promote refused) · 75 the output is locked by another build ·
124 --timeout ran out · 128+N stopped by signal N
(130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import baker
from baker import cliargs
from baker.errors import BakerError, TemplateError, TemplateErrors


def _add_template_args(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    if several:
        p.add_argument("template", type=Path, nargs="+", help="paths to YAML templates")
    else:
        p.add_argument("template", type=Path, help="path to the YAML template")
    p.add_argument("-var", "--var", dest="vars", action="append", type=cliargs.assignment, default=[],
                   metavar="NAME=VALUE",
                   help="set a variable (highest precedence); repeatable")
    p.add_argument("-var-file", "--var-file", dest="var_files", action="append", type=Path, default=[],
                   metavar="FILE", help="YAML file of variable values; repeatable, later files win")
    p.add_argument("--strict", action="store_true",
                   help="treat warnings (e.g. a source without a checksum) as errors")


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", "-only", dest="only", action="append", type=cliargs.names, default=[],
                   metavar="NAME[,NAME]", help="only these builds (a build's name, e.g. uefi, or its full "
                                               "name, e.g. web-uefi); repeatable")
    p.add_argument("--except", "-except", dest="except_", action="append", type=cliargs.names, default=[],
                   metavar="NAME[,NAME]", help="all builds but these; repeatable")


def parser() -> argparse.ArgumentParser:
    p = cliargs.Parser(prog="baker", description="Bake golden VM images with QEMU.")
    p.add_argument("--version", action="version", version=f"baker {baker.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build the image a template describes",
                       description="Boot the source under QEMU, provision over SSH, shut down, export. "
                                   "Several templates, or a template with builds:, run several builds, "
                                   "-j at a time, each in its own process, with a summary at the end.")
    _add_template_args(b, several=True)
    _add_selection_args(b)
    b.add_argument("-j", "--jobs", type=cliargs.count(1), metavar="N",
                   help="builds run at once when there are several (default: as many as CPUs, at most "
                        "the number of builds)")
    b.add_argument("--log-file", type=Path, metavar="FILE",
                   help="also write the run's log (plain timestamped lines) here; with several builds "
                        "one file, every line prefixed with its build's name")
    b.add_argument("--output-dir", "-o", type=Path, help="where artifacts go (default: images/<name>); "
                                                         "only with a single build")
    b.add_argument("--on-error", "-on-error", choices=["cleanup", "abort"], default="cleanup",
                   help="abort: on failure keep the VM up for debugging (SSH command shown) until Ctrl-C")
    b.add_argument("--json", action="store_true", help="JSON event stream on stdout (one object per line)")
    b.add_argument("--plain", action="store_true", help="timestamped lines even on a terminal")
    b.add_argument("--verbose", "-v", action="store_true", help="show debug output")
    b.add_argument("--keep-workdir", action="store_true", help="keep the private work dir after the build")
    b.add_argument("--export-jobs", type=cliargs.count(1), default=2,
                   help="exports run in parallel (default 2)")
    b.add_argument("--timeout", type=cliargs.duration, metavar="DURATION",
                   help="stop and clean up after this long, e.g. 2h (exit code 124)")
    b.add_argument("--accel", choices=["auto", "kvm", "tcg"],
                   help="override machine.accelerator for this build (the BAKER_ACCEL environment "
                        "variable overrides both); auto = KVM when it really runs the guest, else TCG "
                        "with a warning")
    b.add_argument("--store", type=Path, help="record the image in this store (default: $BAKER_STORE "
                                              "or ~/.local/share/baker/store)")
    b.add_argument("--no-store", action="store_true", help="do not record the image in a store")
    b.add_argument("--if-changed", action="store_true",
                   help="do nothing (exit 0) when no input changed since the last good build of this "
                        "output (or the store's latest version); otherwise say what changed and build")
    b.add_argument("--force", "-force", action="store_true", help="build even when --if-changed finds "
                                                                  "nothing changed")
    b.add_argument("--checkpoint", action="store_true",
                   help="save the disk after each provisioner and resume from the deepest unchanged one "
                        "(as checkpoints: true in the template)")
    b.add_argument("--no-checkpoints", action="store_true",
                   help="do not resume from saved checkpoints (fresh ones are still saved)")
    b.add_argument("--wait-lock", action="store_true",
                   help="when another build of the same output runs, wait for it instead of failing "
                        "(exit 75)")
    b.add_argument("--with-children", action="store_true",
                   help="then bring up to date every template beside this one that builds on it "
                        "(source.image), and theirs, each into images/<its name> beside this output")
    b.add_argument("--deps-file", type=Path, metavar="FILE",
                   help="after a good build, write a Make rule (artifacts: inputs) here, like gcc -MD")
    b.add_argument("--apt-cache", action="store_true", default=bool(os.environ.get("BAKER_APT_CACHE")),
                   help="the guest's apt downloads (http sources) go through a cache on the host's "
                        "loopback, kept in the baker cache for the next build (default: on when "
                        "$BAKER_APT_CACHE is set); never part of the image")

    v = sub.add_parser("validate", help="check a template without building",
                       description="Load, render and validate a template; errors name file:line:col.")
    _add_template_args(v, several=True)
    v.add_argument("--json", action="store_true", help="the result (errors, warnings) as one JSON object")

    i = sub.add_parser("inspect", help="show the resolved template and the steps a build runs")
    _add_template_args(i)
    _add_selection_args(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")

    dp = sub.add_parser("deps", help="print the Make rule of a build: its artifacts and every local input",
                        description="Print `ARTIFACTS: TEMPLATE INPUTS...` (and an empty rule per input, as "
                                    "gcc -MP) for a Makefile to -include; `build --deps-file` writes it too.")
    _add_template_args(dp)
    _add_selection_args(dp)
    dp.add_argument("--output-dir", "-o", type=Path, help="the build's output dir (default: images/<name>)")
    dp.add_argument("--makefile", type=Path, metavar="FILE",
                    help="write a makefile fragment instead: one Make target per named build (images/"
                         "<name>-<build>/manifest.json, built with --only) and its rule; see the Makefile")
    dp.add_argument("--images-dir", type=Path, default=Path("images"), metavar="DIR",
                    help="where each build's output dir goes: DIR/<its name> (default: images)")

    d = sub.add_parser("doctor", help="what baker will use on this host, and why",
                       description="QEMU and qemu-img versions, the accelerator decision and where it is "
                                   "recorded, UEFI firmware, tools, free space. Exit 1 if a build cannot "
                                   "work here.")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--reprobe", action="store_true",
                   help="forget what was recorded about KVM on this host boot and probe again")
    d.add_argument("--qemu-binary", default="qemu-system-x86_64", help="the QEMU a template would use")

    im = sub.add_parser("import", help="convert a Packer QEMU template (JSON or HCL2) to a baker template",
                        description="Convert a Packer QEMU template; what cannot be converted is listed "
                                    "with its line (on stderr and as comments in the output).")
    im.add_argument("packer_template", type=Path, help="a Packer template: *.json or *.pkr.hcl")
    im.add_argument("-o", "--output", type=Path, metavar="FILE",
                    help="write the baker template here (default: stdout); relative paths follow it")
    im.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")

    c = sub.add_parser("cache", help="list or prune the verified download cache and the checkpoints")
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cl = csub.add_parser("list", help="cached files, most recently used first")
    cl.add_argument("--json", action="store_true")
    cl.add_argument("--checkpoints", action="store_true", help="list the checkpoint cache only")
    cp = csub.add_parser("prune", help="delete cached files and checkpoints (partial downloads and "
                                       "dead builds' disks are always removed); --older-than also "
                                       "prunes the --apt-cache packages")
    cp.add_argument("--older-than", type=cliargs.age, metavar="DURATION",
                    help="not used for this long, e.g. 30d or 720h")
    cp.add_argument("--keep", type=cliargs.count(0), metavar="N", help="keep the N most recently used files")
    cp.add_argument("--max-size", type=cliargs.size, metavar="SIZE",
                    help="remove least recently used until within SIZE")
    _register_lifecycle(sub)
    return p


def _register_lifecycle(sub) -> None:
    """The store, provenance, SBOM and reference packages define their own subcommands (each sets `func`)."""
    from baker.fmt.cli import register as fmt_command
    from baker.provenance.cli import register as provenance_commands
    from baker.reference.cli import register as docs_command
    from baker.sbom.cli import register as sbom_commands
    from baker.store.cli import register as store_commands

    for register in (store_commands, provenance_commands, sbom_commands, docs_command, fmt_command):
        register(sub)


def _load(args: argparse.Namespace, path: Path | None = None, build: str | None = None):
    from baker.template import load_template

    t = load_template(path or args.template, cli_vars=dict(args.vars), var_files=list(args.var_files),
                      environ=os.environ, build=build)
    if getattr(args, "strict", False) and t.warnings:
        raise TemplateErrors(list(t.warnings))
    return t


def _selected(args: argparse.Namespace) -> list:
    """The builds the command line names (every build of every template, narrowed by --only/--except)."""
    from baker.runner import plan

    templates = args.template if isinstance(args.template, list) else [args.template]
    return plan(templates, lambda p, b: _load(args, p, b), only=[w for ws in args.only for w in ws],
                except_=[w for ws in args.except_ for w in ws])


def _warn(t) -> None:
    for w in t.warnings:
        print(f"WARNING: {w}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    """Every build of every template given; --json: one object, or a list of them for several."""
    from baker.template.builds import build_names

    if args.json:
        from baker.template.report import validation_report

        reports, code = [], 0
        for path in args.template:
            try:
                names: list[str | None] = list(build_names(path)) or [None]
            except (TemplateError, TemplateErrors, OSError):
                names = [None]  # the load below reports the problem in the usual form
            for b in names:
                report, c = validation_report(lambda p=path, b=b: _load(args, p, b), path)
                reports.append(report)
                code = code or c
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        return code
    for path in args.template:
        for b in build_names(path) or [None]:
            t = _load(args, path, b)
            _warn(t)
            exports = ", ".join(e.type for e in t.exports) or "none"
            warned = f"; {len(t.warnings)} warning{'s' if len(t.warnings) > 1 else ''}" if t.warnings else ""
            print(f"{path}: OK ({t.name}: {len(t.provisioners)} provisioners; exports: {exports}{warned})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from baker.steps import plan_steps
    from baker.template import template_to_dict

    views, digests = [], []
    for p in _selected(args):
        t = p.model
        _warn(t)
        views.append({"template": template_to_dict(t), "steps": [s.name for s in plan_steps(t)]})
        digests.append(t.sha256)
    if args.json:  # a template with several builds: {"builds": [one view per build]}
        print(json.dumps(views[0] if len(views) == 1 else {"builds": views}, indent=2, default=str))
        return 0
    import yaml

    for i, (view, sha) in enumerate(zip(views, digests, strict=True)):
        build = f" {view['template']['name']}" if len(views) > 1 else ""
        print(("\n" if i else "") + f"# {args.template}{build} (sha256 {sha[:16]}...)")
        print(yaml.safe_dump(view["template"], sort_keys=False, default_flow_style=False).rstrip())
        print("\n# steps")
        for n, s in enumerate(view["steps"], 1):
            print(f"{n:2d}. {s}")
    return 0


def cmd_deps(args: argparse.Namespace) -> int:
    from baker.incremental import make_rule

    if args.makefile is not None:
        return _deps_makefile(args)
    selected = _selected(args)
    if args.output_dir and len(selected) > 1:
        raise _usage("--output-dir names one build's output; this template has several builds",
                     "pick one with --only NAME, or leave -o out (each goes to images/<its name>)")
    for p in selected:
        _warn(p.model)
        sys.stdout.write(make_rule(p.model, (args.output_dir or args.images_dir / p.name).resolve()))
    return 0


def _deps_makefile(args: argparse.Namespace) -> int:
    """`deps --makefile F`: a plain template is not even loaded (its pattern rule builds it, and its
    inputs, an installer ISO say, may not exist yet); one with builds gets a target per build."""
    from baker.fsutil import atomic_write
    from baker.incremental.deps import build_targets
    from baker.template.builds import build_names

    if args.output_dir is not None:
        raise _usage("--makefile puts each build in --images-dir DIR/<its name>; -o names one output")
    builds = []
    if build_names(args.template):
        for p in _selected(args):
            _warn(p.model)
            if p.build is not None:
                builds.append((p.model, p.build))
    atomic_write(args.makefile, build_targets(str(args.template), builds, args.images_dir.resolve(),
                                              args.makefile.resolve()))
    return 0


def _usage(message: str, hint: str | None = None) -> BakerError:
    from baker.runner import UsageError

    return UsageError(message, hint=hint)


def cmd_cache(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from baker import aptcache as apt_cache
    from baker.checkpoint import cli as checkpoints
    from baker.sources.cache import DownloadCache
    from baker.units import human_size

    cache = DownloadCache()
    if args.cache_command == "list" and args.checkpoints:
        checkpoints.print_list(as_json=args.json)
        return 0
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
        n, size = apt_cache.usage()
        print(f"apt cache (--apt-cache): {n} packages, {human_size(size)} in {apt_cache.apt_cache_dir()}")
        print("checkpoints (baker cache list --checkpoints):")
        checkpoints.print_list()
        return 0
    removed = cache.prune(older_than=args.older_than, keep=args.keep, max_bytes=args.max_size)
    removed += apt_cache.prune(older_than=args.older_than)
    for p in removed:
        print(f"removed {p}")
    print(f"{len(removed)} files removed")
    gone = checkpoints.prune(older_than=args.older_than, max_bytes=args.max_size, everything=args.keep == 0)
    for p in gone:
        print(f"removed {p}")
    print(f"checkpoints: {len(gone)} files removed (never one in use or backing another)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from baker.doctor import run_checks

    checks = run_checks(args.qemu_binary, reprobe=args.reprobe)
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}, indent=2))
        return 1 if failed else 0
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.status.upper():4}  {c.name:<{width}}  {c.detail}")
        if c.hint and c.status != "ok":
            print(f"{'':4}  {'':<{width}}  -> {c.hint}")
    print("a build cannot work here: fix the FAIL lines" if failed else "baker can build on this host")
    return 1 if failed else 0


def cmd_import(args: argparse.Namespace) -> int:
    from baker.fsutil import atomic_write
    from baker.packer_import import import_packer, report

    out = args.output
    if out is not None and (out.is_dir() or (out.exists() and not args.overwrite)):
        what = "is a directory" if out.is_dir() else "exists (add --overwrite to replace it)"
        print(f"error: {out} {what}", file=sys.stderr)
        return 2
    imported = import_packer(args.packer_template, out.parent if out is not None else None)
    if out is None:
        sys.stdout.write(imported.yaml_text)
    else:
        try:
            atomic_write(out, imported.yaml_text)
        except OSError as e:
            print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            return 1
    print(report(imported), file=sys.stderr)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from baker.build import run_build
    from baker.output import Reporter
    from baker.state import BuildOptions

    mode = "json" if args.json else ("plain" if args.plain else None)
    selected = _selected(args)
    if len(selected) > 1:
        from baker.runner.cli import build_many

        return build_many(args, selected, mode)
    t = selected[0].model
    with _open_log(args.log_file) as log_file:
        reporter = Reporter(mode, build=t.name, log_file=log_file)
        for w in t.warnings:
            reporter.event("warning", message=str(w))
        if args.checkpoint and not t.checkpoints:
            from baker.template.checks import checkpoints_unsupported

            why = checkpoints_unsupported(t)
            if why is None:
                t.checkpoints = True
            else:  # the flag is a wish for speed, not a reason to fail the build
                reporter.event("warning", message=f"--checkpoint is ignored: {why[0]} ({why[1]})")
        out = args.output_dir or Path("images") / t.name
        options = BuildOptions(output_dir=out.resolve(), on_error=args.on_error,
                               keep_workdir=args.keep_workdir, export_jobs=args.export_jobs,
                               timeout=args.timeout, accelerator=args.accel,
                               if_changed=args.if_changed, force=args.force, wait_lock=args.wait_lock,
                               deps_file=args.deps_file.resolve() if args.deps_file else None,
                               apt_cache=args.apt_cache, ignore_checkpoints=args.no_checkpoints)
        if not args.no_store:
            from baker.store import default_store_path

            options.store = (args.store or default_store_path()).resolve()
        try:
            outcome = run_build(t, options, reporter, verbose=args.verbose)
            if outcome.ok and args.with_children:
                return _build_children(t, options, reporter, args.verbose)
        finally:
            reporter.close()
        return outcome.exit_code


def _open_log(path: Path | None):
    import contextlib

    if path is None:
        return contextlib.nullcontext(None)
    from baker.runner.cli import open_log_file

    return open_log_file(path)


def _build_children(t, options, reporter, verbose: bool) -> int:
    """Layers on t, parents before children, each with --if-changed; the first failure's code."""
    import dataclasses

    from baker.build import run_build
    from baker.layers import children_of

    code = 0
    for child in children_of(t, os.environ):
        opts = dataclasses.replace(options, output_dir=options.output_dir.parent / child.name,
                                   if_changed=True, force=False, deps_file=None)
        done = run_build(child, opts, reporter, verbose=verbose)
        code = code or done.exit_code
    return code


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if any("\x00" in w for w in words):  # no shell passes one; paths with it cannot be opened
        print("error: an argument contains a NUL byte", file=sys.stderr)
        return 2
    args = parser().parse_args(words)
    handler = getattr(args, "func", None) or {
        "build": cmd_build, "validate": cmd_validate, "inspect": cmd_inspect, "cache": cmd_cache,
        "doctor": cmd_doctor, "import": cmd_import, "deps": cmd_deps}[args.command]
    try:
        return handler(args)
    except BrokenPipeError:
        # `baker inspect T | head`: the reader has all it wanted; exit like a SIGPIPE'd tool, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
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
