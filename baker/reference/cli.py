"""`baker docs [SECTION]`: registered by cli.py, printed by baker.reference.text."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    d = sub.add_parser("docs", help="the template reference: every key's type, default and help",
                       description="Print the reference of a template section (e.g. machine, "
                                   "exports.vmdk, provisioners.shell); without SECTION, list the sections. "
                                   "Generated from the code, like docs/template.schema.json.")
    d.add_argument("section", nargs="?", help="a section path, e.g. source.cloud_image")
    d.set_defaults(func=cmd_docs)


def cmd_docs(args: argparse.Namespace) -> int:
    from baker.reference.text import render_index, render_section

    print(render_section(args.section) if args.section else render_index())
    return 0
