"""Layered images: a template whose base is another template's image, or a stored image version."""

from baker.layers.children import children_of
from baker.layers.parent import Parent, ParentRef, parse_ref, resolve_parent, with_parent_source

__all__ = ["Parent", "ParentRef", "children_of", "parse_ref", "resolve_parent", "with_parent_source"]
