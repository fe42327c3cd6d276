"""`baker deps` and `build --deps-file`: a Make rule from the artifacts to every local input, as
`gcc -MD -MP` writes one, so a Makefile can `-include images/*.d` and know when to rebuild.

`baker deps --makefile F` goes one step further for a template with `builds:`: Make cannot know its
builds, so F names them (one target per build, with the template and build name as target-specific
variables for the Makefile's recipe to run `baker build --only`), and holds each build's rule."""

from __future__ import annotations

import os
from pathlib import Path

from baker.fsutil import atomic_write
from baker.inputs import local_files
from baker.outputs import planned_files
from baker.template.model import Template


def _esc(path: str) -> str:
    return path.replace("$", "$$").replace(" ", "\\ ").replace("#", "\\#").replace(":", "\\:")


def _show(p: Path | str) -> str:
    rel = os.path.relpath(p)
    return str(p) if rel.startswith("../../") else rel


def _base_files(t: Template, output_dir: Path) -> list[Path]:
    """The base image and its checksum file when they are local files; for a layer on a parent
    template, the parent template and the parent build's manifest (its own rule builds it)."""
    from baker.checksum import ChecksumFileRef, parse_checksum
    from baker.sources.cache import local_path
    from baker.sources.source import source_checksum_spec, source_urls

    if t.source.image:
        from baker.layers import parse_ref
        from baker.layers.parent import parent_output_dir
        from baker.template import load_template

        ref = parse_ref(t.source.image, t.path.parent)
        if ref.template is None:
            return []  # a stored version is immutable: nothing for Make to watch
        parent = load_template(ref.template, environ=t.render_state.environ if t.render_state else None)
        return [parent_output_dir(parent, output_dir) / "manifest.json"]
    src = t.source.cloud_image or t.source.iso
    if src is None:
        return []
    out = [p for u in source_urls(src, t.path.parent)[:1] if (p := local_path(u)) is not None]
    spec = parse_checksum(source_checksum_spec(src, t.path.parent))
    if isinstance(spec, ChecksumFileRef) and (p := local_path(spec.location)) is not None:
        out.append(p)
    return out


def prerequisites(t: Template, output_dir: Path) -> list[Path]:
    """The template, then every local file the build reads; folders with each file in them."""
    out: list[Path] = []
    for inp in local_files(t):
        p = inp.path
        if p is None:
            continue
        out.append(p)
        if inp.kind == "directory":
            out += sorted(Path(d, f) for d, _, fs in os.walk(p) for f in fs)
    out += _base_files(t, output_dir)
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def make_rule(t: Template, output_dir: Path) -> str:
    targets = " ".join(_esc(_show(p)) for p in planned_files(t, output_dir))
    prereqs = [_esc(_show(p)) for p in prerequisites(t, output_dir)]
    lines = [f"{targets}: " + " \\\n  ".join(prereqs), ""]
    # -MP: an empty rule per input, so deleting a script breaks no make run (it rebuilds instead);
    # not for a parent's manifest, which its own rule builds
    lines += [f"{p}:\n" for p in prereqs[1:] if not p.endswith("/manifest.json")]
    return "\n".join(lines)


def write_deps_file(path: Path, t: Template, output_dir: Path) -> Path:
    return atomic_write(path, make_rule(t, output_dir))


# the Make variables a --makefile file sets (the repository's Makefile reads them)
WITH_BUILDS, BUILD_MANIFESTS = "IMAGE_TEMPLATES_WITH_BUILDS", "IMAGE_BUILD_MANIFESTS"
BUILD_TEMPLATE, BUILD_ONLY = "IMAGE_BUILD_TEMPLATE", "IMAGE_BUILD_ONLY"


def build_targets(template: str, builds: list[tuple[Template, str]], images_dir: Path, makefile: Path) -> str:
    """A makefile fragment: every build of `template` (as given, so the includer can filter it out of
    its one-output-per-template rule) as the target `images_dir/<name>-<build>/manifest.json`, with
    its rule. Without builds only the fragment's own prerequisite: the template's pattern rule builds it."""
    value = template.replace("$", "$$")
    lines = [f"# {_show(makefile)}: written by `baker deps --makefile` from {template}; -include it (see the "
             "repository's Makefile)"]
    sources = [Path(template).resolve()] + [f for t, _ in builds for f in t.included_files]
    lines.append(f"{_esc(_show(makefile))}: " + " ".join(dict.fromkeys(_esc(_show(p)) for p in sources)))
    if not builds:
        return "\n".join(lines) + "\n"
    outs = [(t, b, images_dir / t.name) for t, b in builds]
    manifests = [_esc(_show(out / "manifest.json")) for _, _, out in outs]
    lines += [f"{WITH_BUILDS} += {value}", f"{BUILD_MANIFESTS} += {' '.join(manifests)}", ""]
    for (t, b, out), target in zip(outs, manifests, strict=True):
        lines += [f"{target}: {BUILD_TEMPLATE} := {value}", f"{target}: {BUILD_ONLY} := {b}",
                  make_rule(t, out)]
    return "\n".join(lines)
