"""Templates: YAML with line marks → rendered, typed, validated `Template` (see model.py)."""

from baker.template.loader import load_template, render_late, template_to_dict
from baker.template.model import ExportSpec, Template, Variable

__all__ = ["ExportSpec", "Template", "Variable", "load_template", "render_late", "template_to_dict"]
