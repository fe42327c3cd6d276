"""The template reference, generated from the code: a JSON Schema for editors and CI, and the text
`baker docs SECTION` prints. Both render one walk of the model's type hints and `help` metadata, so
they cannot go out of date; tests fail when the shipped schema differs from a fresh one."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_NAME = "template.schema.json"
PACKAGED = Path(__file__).resolve().parent.parent / "data" / SCHEMA_NAME
DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / SCHEMA_NAME  # in a source checkout
REGENERATE = "python -m baker.reference --write"

__all__ = ["DOCS", "PACKAGED", "REGENERATE", "schema_text"]


def schema_text() -> str:
    from baker.reference.schema import template_schema  # imported late: `baker --help` stays fast

    return json.dumps(template_schema(), indent=2, ensure_ascii=False) + "\n"
