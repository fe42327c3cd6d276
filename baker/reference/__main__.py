"""`python -m baker.reference [--write | --check]`: print, write or check the shipped schema copies."""

from __future__ import annotations

import argparse
import sys

from baker.fsutil import atomic_write
from baker.reference import DOCS, PACKAGED, REGENERATE, schema_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m baker.reference", allow_abbrev=False,
                                description="The template JSON Schema, generated from the code.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PACKAGED.name} into baker/data and docs")
    mode.add_argument("--check", action="store_true", help="exit 1 if a written copy is out of date")
    args = p.parse_args(argv)
    text = schema_text()
    targets = [PACKAGED] + ([DOCS] if DOCS.parent.is_dir() else [])
    if args.write:
        for path in targets:
            atomic_write(path, text)
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = [p for p in targets if not p.is_file() or p.read_text() != text]
        for path in stale:
            print(f"{path} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
