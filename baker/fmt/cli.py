"""`baker fmt`: registered by cli.py; formatting itself is in baker.fmt.format."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any


def register(sub: Any) -> None:
    f = sub.add_parser("fmt", help="rewrite templates in the canonical key order and style, comments kept",
                       description="Rewrite templates in the canonical key order (the model's, see baker "
                                   "docs) and style (2-space indent, comments, quotes and tags kept). A "
                                   "directory means its *.yaml/*.yml files. Exit codes: 0 done (or nothing "
                                   "to change), 1 with --check/--diff when a file would change, 2 when a "
                                   "file cannot be formatted.")
    f.add_argument("paths", nargs="+", metavar="TEMPLATE", help="template files or directories")
    f.add_argument("--check", action="store_true",
                   help="write nothing; list the files that would change and exit 1 if any (for CI)")
    f.add_argument("--diff", action="store_true",
                   help="like --check, and print a unified diff of each change")
    f.set_defaults(func=cmd_fmt)


def cmd_fmt(args: argparse.Namespace) -> int:
    from baker.fmt.format import FormatError, format_file, template_files

    check = args.check or args.diff
    code = 0
    for path in template_files(args.paths):
        try:
            outcome = format_file(path, write=not check)
        except FormatError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 2
            continue
        if not outcome.changed:
            continue
        if check:
            print(f"would reformat {path}")
            code = code or 1
            if args.diff:
                sys.stdout.writelines(difflib.unified_diff(
                    outcome.before.splitlines(True), outcome.after.splitlines(True),
                    f"{path} (original)", f"{path} (formatted)"))
        else:
            print(f"formatted {path}")
    return code
