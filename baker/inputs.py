"""Everything a build is made from, each with its digest: template, resolved variables (secrets
masked), base image, provisioner scripts and uploaded files, tool versions.

One module on purpose: the provenance statement lists these inputs, and the build fingerprint
(baker.incremental: rebuild only if something changed) hashes the same listing.
"""

from __future__ import annotations

import glob
import hashlib
import os
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import baker
from baker.digests import cached_digest
from baker.secrets import MASK
from baker.template.model import FileProvisioner, ShellLocalProvisioner, ShellProvisioner, Template


@dataclass(frozen=True)
class Input:
    """One resolved dependency: what it is, where it came from, its sha256."""

    # "template" | "include" | "base_image" | "script" | "file" | "directory" | "var_file" | "media"
    kind: str
    uri: str
    sha256: str

    @property
    def path(self) -> Path | None:
        """The local path of a file: URI (percent-escapes decoded), else None."""
        parts = urllib.parse.urlsplit(self.uri)
        return Path(urllib.parse.unquote(parts.path)) if parts.scheme == "file" else None


@dataclass
class BuildInputs:
    name: str
    version: str
    template: Input
    variables: dict[str, Any]  # resolved values, sensitive ones as <sensitive>
    base_image: Input | None
    files: list[Input] = field(default_factory=list)  # provisioner scripts and uploads, in template order
    tools: dict[str, str] = field(default_factory=dict)

    def dependencies(self) -> list[Input]:
        return [self.template, *([self.base_image] if self.base_image else []), *self.files]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def masked_variables(t: Template) -> dict[str, Any]:
    return {k: (MASK if k in t.sensitive_values else v) for k, v in sorted(t.values.items())}


def tree_digest(root: Path) -> str:
    """A folder's digest: sha256 over its sorted relative paths and their files' sha256."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            h.update(f"{p.relative_to(root).as_posix()}\0{cached_digest(p)}\n".encode())
    return h.hexdigest()


def _local(path: str, kind: str) -> Input:
    p = Path(path.rstrip("/") or "/")
    if p.is_dir():
        return Input("directory", p.as_uri(), tree_digest(p))
    return Input(kind, p.as_uri(), cached_digest(p))


def provisioner_inputs(p: object) -> list[Input]:
    """The local files one provisioner reads (scripts, an upload's source); checkpoints key on these."""
    if isinstance(p, ShellProvisioner | ShellLocalProvisioner):
        return [_local(s, "script") for s in ([p.script] if p.script else []) + list(p.scripts)]
    if isinstance(p, FileProvisioner) and p.direction == "upload" and p.source:
        return [_local(p.source, "file")]
    return []


def provisioner_files(t: Template) -> list[Input]:
    return [inp for p in t.provisioners for inp in provisioner_inputs(p)]


def media_files(t: Template) -> list[Input]:
    """What the guest reads besides the base: the extra CD, the HTTP folder, a direct-boot kernel."""
    src = t.source
    paths = [*src.cd_files, *([src.http_directory] if src.http_directory else []),
             *([src.kernel] if src.kernel else []), *([src.initrd] if src.initrd else [])]
    return [_local(p, "media") for p in _expand(paths)]


def include_files(t: Template) -> list[Input]:
    """The fragments `include:` and `!include` pulled into the template."""
    return [Input("include", p.as_uri(), cached_digest(p)) for p in t.included_files]


def var_files(t: Template) -> list[Input]:
    return [Input("var_file", p.as_uri(), cached_digest(p)) for p in t.var_files]


def local_files(t: Template) -> list[Input]:
    """Every local file or folder the build reads, template first: Make's prerequisites, in order."""
    return [Input("template", t.path.as_uri(), t.sha256), *include_files(t), *var_files(t),
            *provisioner_files(t), *media_files(t)]


def _expand(paths: list[str]) -> list[str]:
    """cd_files may be globs (as in Packer); a glob that matches nothing stays as written."""
    out: list[str] = []
    for p in paths:
        hits = sorted(glob.glob(p)) if glob.has_magic(p) else []
        out += hits or [p]
    return out


def collect(t: Template, *, base_url: str | None, base_sha256: str | None,
            qemu_version: str = "") -> BuildInputs:
    base = Input("base_image", base_url or "", base_sha256) if base_sha256 else None
    return BuildInputs(
        name=t.name, version=t.version,
        template=Input("template", t.path.as_uri(), t.sha256),
        variables=masked_variables(t), base_image=base,
        files=[*include_files(t), *var_files(t), *provisioner_files(t), *media_files(t)],
        tools={"baker": baker.__version__, "qemu": qemu_version},
    )
