"""`baker validate --json`: the outcome of loading a template as one JSON object, errors included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from baker.errors import EXIT_OK, BakerError, TemplateError, TemplateErrors
from baker.template.model import Template


def problem(e: TemplateError) -> dict[str, Any]:
    m = e.mark
    return {"file": m.file if m else None, "line": m.line if m else None, "col": m.col if m else None,
            "path": e.path or None, "message": e.message, "hint": e.hint}


def validation_report(load: Callable[[], Template], path: Path) -> tuple[dict[str, Any], int]:
    """Run `load` and describe the result; the exit code is 0, or the error's (2 for templates)."""
    out: dict[str, Any] = {"template": str(path), "ok": False, "errors": [], "warnings": []}
    try:
        t = load()
    except TemplateErrors as e:
        out["errors"] = [problem(x) for x in e.errors]
        return out, e.exit_code
    except TemplateError as e:
        out["errors"] = [problem(e)]
        return out, e.exit_code
    except BakerError as e:
        out["errors"] = [{"file": None, "line": None, "col": None, "path": None, "message": e.message,
                          "hint": e.hint}]
        return out, e.exit_code
    out.update(ok=True, name=t.name, version=t.version, warnings=[problem(w) for w in t.warnings],
               provisioners=len(t.provisioners), exports=[e.type for e in t.exports])
    return out, EXIT_OK
