"""Which builds a run makes: every build of every template given, narrowed by --only/--except.

A template without `builds:` is one build named after the template; a named build matches a word of
--only/--except by its own name (`uefi`, in every template that has it) or its full name (`web-uefi`).
Every template and build is loaded here, before anything starts, so a bad one stops the run at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from baker.errors import EXIT_USAGE, BakerError
from baker.template.builds import build_names
from baker.template.model import Template


class UsageError(BakerError):
    """A run that cannot start as asked (exit 2), e.g. --only naming no build."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Planned:
    """One build of the run: the template file, its build name (None: a plain template), the loaded model."""

    template: Path
    build: str | None
    model: Template

    @property
    def name(self) -> str:
        return self.model.name


Loader = Callable[[Path, str | None], Template]


def plan(templates: Sequence[Path], load: Loader, *, only: Sequence[str] = (),
         except_: Sequence[str] = ()) -> list[Planned]:
    """The selected builds, in the order given; UsageError for a word that names no build."""
    every: list[Planned] = []
    for path in templates:
        names = build_names(path)
        every += [Planned(path, b, load(path, b)) for b in (names or [None])]
    words = {w: [p for p in every if w in (p.build, p.name)] for w in [*only, *except_]}
    candidates = sorted({n for p in every for n in (p.build, p.name) if n})
    for word, hits in words.items():
        if not hits:
            close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
            raise UsageError(f"no build named '{word}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                             hint=f"builds here: {', '.join(candidates)}")
    chosen = [p for p in every if (not only or any(p in words[w] for w in only))
              and not any(p in words[w] for w in except_)]
    if not chosen:
        raise UsageError("nothing to build: --only/--except left no build",
                         hint=f"builds here: {', '.join(candidates)}")
    seen: dict[str, Planned] = {}
    for p in chosen:
        if p.name in seen:
            raise UsageError(f"{seen[p.name].template} and {p.template} both build '{p.name}' (one output, "
                             f"images/{p.name})", hint="name each template once")
        seen[p.name] = p
    return chosen

