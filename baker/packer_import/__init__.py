"""`baker import`: a Packer QEMU template (JSON or HCL2) as a baker YAML template, and what did not map.

Nothing is dropped silently: every key is converted, noted as not needed (with why) or listed as
unmapped with its line; the unmapped ones are also written as comments at the top of the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from baker.errors import BakerError
from baker.packer_import.mapping import Conversion, Finding, Mapper
from baker.packer_import.nodes import UnreadableTemplate
from baker.packer_import.read_hcl import read_hcl
from baker.packer_import.read_json import read_json

__all__ = ["Conversion", "Finding", "ImportFailed", "Imported", "import_packer"]


class ImportFailed(BakerError):
    """The Packer template cannot be read or has nothing baker can build (exit 1)."""


@dataclass
class Imported:
    source: Path
    conversion: Conversion
    yaml_text: str


def import_packer(path: Path, out_dir: Path | None = None) -> Imported:
    """Convert `path`; relative paths in it are rewritten relative to `out_dir` (default: its folder)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ImportFailed(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ImportFailed(f"{path} is not UTF-8 text") from None
    is_json = path.suffix == ".json" or text.lstrip().startswith("{")
    try:
        doc = read_json(text, path.name) if is_json else read_hcl(text, path.name)
    except UnreadableTemplate as e:
        raise ImportFailed(f"{path}:{e.line}: {e}") from None
    src_dir = path.resolve().parent
    conversion = Mapper(doc, src_dir, (out_dir or src_dir).resolve()).run()
    if not conversion.template:
        raise ImportFailed(f"{path}: no qemu builder/source to convert",
                           hint="baker imports Packer's QEMU builder (type qemu / source \"qemu\" ...)")
    return Imported(path, conversion, render(path, conversion))


def render(path: Path, c: Conversion) -> str:
    head = [f"# Converted from {path.name} by `baker import`; check it with `baker validate`."]
    if c.unmapped:
        head.append("# NOT converted (edit by hand):")
        head += [f"#   {path.name}:{f.line}: {f.key}: {f.message}" for f in c.unmapped]
    if c.notes:
        head.append("# Notes:")
        head += [f"#   {path.name}:{f.line}: {f.key}: {f.message}" for f in c.notes]
    body = yaml.safe_dump(_plain(c.template), sort_keys=False, allow_unicode=True, width=100,
                          default_flow_style=False)
    return "\n".join(head) + "\n" + body


def _plain(v: Any) -> Any:
    """Plain dicts and lists for the YAML dumper (the readers' dicts are a subclass it refuses)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def report(imported: Imported) -> str:
    """The summary `baker import` prints to stderr."""
    c, name = imported.conversion, imported.source.name
    lines = [f"{name}: {len(c.mapped)} settings converted, {len(c.notes)} notes, "
             f"{len(c.unmapped)} not converted"]
    for title, items in (("not converted", c.unmapped), ("notes", c.notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  {name}:{f.line}: {f.key}: {f.message}" for f in items]
    return "\n".join(lines)
