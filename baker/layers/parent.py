"""`source.image`: which image a layer builds on, and the cloud-image source that stands for it.

A parent named by template is built into the folder beside the child's output, named after the
parent (`images/debian-12-golden/` for `images/web/`), the way `make images` lays them out. Its
qcow2 export is the child's base, pinned by the sha256 its manifest records. A parent named by
store reference (`name`, `name@version`, `name@channel`) is that version's qcow2 blob: immutable
and content-addressed, so an overlay on it can never see it change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from baker.errors import BakerError
from baker.outputs import MANIFEST
from baker.template.model import CloudImageSource, Template


@dataclass(frozen=True)
class ParentRef:
    text: str
    template: Path | None = None  # a parent template (absolute)
    name: str = ""  # a store reference: name, and version or channel after '@'
    selector: str | None = None


@dataclass(frozen=True)
class Parent:
    ref: ParentRef
    artifact: Path  # the qcow2 the child's disk is an overlay on
    sha256: str
    name: str
    version: str
    output_dir: Path | None = None  # for a parent template: where it is built


def parse_ref(text: str, template_dir: Path) -> ParentRef:
    if text.endswith((".yaml", ".yml")) or "/" in text:
        p = Path(text)
        return ParentRef(text, template=Path(os.path.abspath(template_dir / p if not p.is_absolute() else p)))
    name, _, selector = text.partition("@")
    if not name:
        raise BakerError(f"source.image '{text}' names no image",
                         hint="a template path (../golden/golden.yaml) or a stored image: "
                              "name[@version|@channel]")
    return ParentRef(text, name=name, selector=selector or None)


def parent_output_dir(parent: Template, child_output: Path) -> Path:
    return child_output.parent / parent.name


def _qcow2_of(manifest: dict, folder: Path, what: str) -> tuple[Path, str]:
    for a in manifest.get("artifacts", []):
        if a.get("export") == "qcow2" and str(a.get("file", "")).endswith(".qcow2"):
            return folder / a["file"], a["sha256"]
    raise BakerError(f"{what} has no qcow2 export to build on",
                     hint="add `- type: qcow2` to the parent's exports")


def from_output(ref: ParentRef, parent: Template, output_dir: Path) -> Parent:
    """The parent as its last good build left it (BakerError when it has not been built)."""
    try:
        manifest = json.loads((output_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BakerError(f"the parent image {parent.name} has not been built into {output_dir}",
                         hint=f"baker build {parent.path} -o {output_dir}") from None
    artifact, sha = _qcow2_of(manifest, output_dir, f"the parent build in {output_dir}")
    return Parent(ref, artifact, sha, parent.name, str(manifest.get("version", "")), output_dir)


def from_store(ref: ParentRef, store: Path | None) -> Parent:
    from baker.store import Store, StoreError

    if store is None or not (store / "catalog.sqlite").exists():
        raise BakerError(f"source.image '{ref.text}' names a stored image, but there is no store",
                         hint="record the parent with `baker build` (it records by default), or pass --store")
    s = Store(store)
    try:
        sel = ref.selector
        channel = sel if sel and sel in s.channels(ref.name) else None
        try:
            v = s.resolve(ref.name, version=None if channel else sel, channel=channel)
        except StoreError as e:
            raise BakerError(f"source.image '{ref.text}': {e}") from None
        if v.revoked:
            raise BakerError(f"source.image '{ref.text}' is {v.ref}, which is revoked: {v.revoked_reason}")
        files = {f.path: f for f in v.files}
        artifact, sha = _qcow2_of(v.manifest, Path("/"), f"the stored {v.ref}")
        stored = files.get(artifact.name)
        if stored is None:
            raise BakerError(f"the stored {v.ref} lacks its qcow2 file {artifact.name}")
        return Parent(ref, s.blob_path(stored), sha, v.name, v.version)
    finally:
        s.close()


def resolve_parent(t: Template, child_output: Path, store: Path | None) -> Parent | None:
    """The built parent of a layer (None for a template without source.image); never builds."""
    text = t.source.image
    if not text:
        return None
    ref = parse_ref(text, t.path.parent)
    if ref.template is None:
        return from_store(ref, store)
    from baker.template import load_template

    parent_t = load_template(ref.template, environ=t.render_state.environ if t.render_state else None)
    return from_output(ref, parent_t, parent_output_dir(parent_t, child_output))


def with_parent_source(t: Template, parent: Parent) -> Template:
    """The child as a cloud-image build on the parent's qcow2, pinned by its recorded digest."""
    ci = CloudImageSource(url=str(parent.artifact), checksum=f"sha256:{parent.sha256}", format="qcow2",
                          disk_mode="overlay")
    return dataclasses.replace(t, source=dataclasses.replace(t.source, cloud_image=ci))
