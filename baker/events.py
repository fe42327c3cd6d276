"""The `--json` event stream's schema: one object per line, each with `ts` and `event` plus its fields.

Kept here as data so docs/events.md and the tests check the same thing a build emits (see
`event_problems`). Adding a field is compatible; renaming or removing one is not.
"""

from __future__ import annotations

import re
from typing import Any

_NUM = (int, float)
_OPT_STR = (str, type(None))
# field -> allowed types, per event kind; every field listed is always present
EVENTS: dict[str, dict[str, tuple[type, ...]]] = {
    "build_start": {"name": (str,), "template": (str,), "steps": (list,), "output_dir": (str,)},
    "step_start": {"step": (str,), "index": (int,), "total": (int,)},
    "step_done": {"step": (str,), "index": (int,), "total": (int,), "seconds": _NUM},
    "build_skipped": {"name": (str,), "reason": (str,), "output_dir": (str,)},
    "build_reason": {"name": (str,), "reason": (str,), "changed": (list,)},
    "build_done": {"name": (str,), "seconds": _NUM, "output_dir": (str,), "artifacts": (list,)},
    "build_failed": {"step": _OPT_STR, "message": (str,), "tails": (dict,), "logs": _OPT_STR,
                     "exit_code": (int,), "debug": (dict, type(None))},
    "progress": {"what": (str,), "done": (int,), "total": (int, type(None)), "rate": _NUM,
                 "eta": (int, float, type(None))},
    "log": {"message": (str,)},
    "info": {"message": (str,)},
    "warning": {"message": (str,)},
    "error": {"message": (str,)},
}
# fields every event carries, whatever its kind
COMMON: dict[str, tuple[type, ...]] = {"build": (str,)}
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def event_problems(record: Any) -> list[str]:
    """What is wrong with one decoded event (empty when it matches the schema)."""
    if not isinstance(record, dict):
        return [f"an event is a JSON object, got {type(record).__name__}"]
    kind = record.get("event")
    if kind not in EVENTS:
        return [f"unknown event kind {kind!r}"]
    out = []
    if not isinstance(record.get("ts"), str) or not _TS.fullmatch(record["ts"]):
        out.append(f"{kind}: ts must be a UTC time like 2026-01-31T12:00:00Z, got {record.get('ts')!r}")
    for name, types in {**COMMON, **EVENTS[kind]}.items():
        if name not in record:
            out.append(f"{kind}: missing field '{name}'")
        elif not isinstance(record[name], types) or (isinstance(record[name], bool) and bool not in types):
            out.append(f"{kind}: field '{name}' has type {type(record[name]).__name__}")
    return out
