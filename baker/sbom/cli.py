"""`baker sbom diff` (cli.py dispatches)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from baker.errors import BakerError
from baker.sbom import SBOM_FILE


def register(sub: Any) -> None:
    from baker.store.cli import add_store_arg

    s = sub.add_parser("sbom", help="the package inventories of stored versions")
    ssub = s.add_subparsers(dest="sbom_command", required=True, metavar="ACTION")
    d = ssub.add_parser("diff", help="packages added, removed and changed between two versions")
    d.add_argument("name")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--json", action="store_true")
    add_store_arg(d)
    s.set_defaults(func=cmd_sbom)


def _sbom(store: Any, name: str, version: str) -> dict[str, Any]:
    from baker.sbom.cyclonedx import load

    v = store.resolve(name, version)
    f = v.file(SBOM_FILE)
    if f is None:
        raise BakerError(f"{v.ref} has no SBOM ({SBOM_FILE})")
    return load(store.blob_path(f).read_bytes())


def cmd_sbom(args: argparse.Namespace) -> int:
    from baker.sbom.diff import diff
    from baker.store.cli import open_store

    store = open_store(args)
    d = diff(_sbom(store, args.name, args.old), _sbom(store, args.name, args.new))
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
        return 0
    for line in d.lines():
        print(line)
    print(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed")
    return 0
