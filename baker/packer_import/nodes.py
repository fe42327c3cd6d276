"""What the readers produce: Packer's blocks as dicts that remember the line of each key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class UnreadableTemplate(ValueError):
    """The input is not valid JSON / HCL2; `line` is where the reader gave up."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class Obj(dict):
    """A JSON object / HCL block body; `line` is where it starts, `lines[key]` where a key is set."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}

    def at(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass
class Plugin:
    """One builder, provisioner or post-processor: its type, its settings and where it is."""

    type: str
    body: Obj
    where: str  # e.g. builders[0], build.provisioner[2]
    name: str = ""


@dataclass
class PackerVar:
    name: str
    line: int
    default: Any = None
    has_default: bool = False
    type: str | None = None
    sensitive: bool = False
    description: str = ""
    extra: dict[str, int] = field(default_factory=dict)  # keys not understood, with their lines


@dataclass
class PackerDoc:
    """A Packer template, JSON or HCL2, in one shape."""

    file: str
    syntax: str  # "json" | "hcl2"
    builders: list[Plugin] = field(default_factory=list)
    provisioners: list[Plugin] = field(default_factory=list)
    post_processors: list[Plugin] = field(default_factory=list)
    variables: list[PackerVar] = field(default_factory=list)
    description: str = ""
    # top-level things baker has no place for: (what, line, why)
    leftovers: list[tuple[str, int, str]] = field(default_factory=list)
    # things known and not needed in baker: (what, line, why)
    notes: list[tuple[str, int, str]] = field(default_factory=list)
