"""`build --with-children`: the templates beside a parent that build on it, parents before children."""

from __future__ import annotations

import os
from pathlib import Path

from baker.template.model import Template


def children_of(parent: Template, environ=None) -> list[Template]:
    """Templates in the parent's folder whose source.image is the parent's file, then theirs (depth first)."""
    from baker.errors import TemplateError, TemplateErrors
    from baker.layers.parent import parse_ref
    from baker.template import load_template

    out: list[Template] = []
    seen: set[Path] = {parent.path}

    def walk(p: Template) -> None:
        for path in sorted(p.path.parent.glob("*.y*ml")):
            if path in seen:
                continue
            try:
                child = load_template(path, environ=os.environ if environ is None else environ)
            except (TemplateError, TemplateErrors):
                continue  # not ours to report: `baker validate` it
            image = child.source.image
            if image and parse_ref(image, child.path.parent).template == p.path:
                seen.add(path)
                out.append(child)
                walk(child)

    walk(parent)
    return out
