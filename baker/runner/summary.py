"""The end of a run of several builds: a table (name, result, time, size) and one exit code.

Exit code: 0 when every build succeeded or was up to date; 128+N when the run itself got signal N
(130 Ctrl-C, 143 SIGTERM: the signal was passed to every build); otherwise the failed builds' code
when they all agree (75 all locked, 124 all timed out, 2 ...), else 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baker.errors import EXIT_FAILED, EXIT_OK
from baker.units import human_duration, human_size


@dataclass(frozen=True)
class Result:
    name: str
    result: str  # ok | skipped | failed | interrupted | not started
    seconds: float
    size: int  # bytes of the output dir after the build (0 when it failed: nothing is published)
    exit_code: int
    step: str | None = None  # where a failed build stopped


def output_size(out: str | Path | None) -> int:
    """Bytes of the files in an output dir (what a build published), 0 when there is none."""
    if not out or not Path(out).is_dir():
        return 0
    total = 0
    for root, _dirs, files in os.walk(out):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total


def table(results: Sequence[Result]) -> str:
    """A fixed-width table, one row per build, and a closing count line."""
    rows = [("BUILD", "RESULT", "TIME", "SIZE")]
    for r in results:
        what = r.result.upper() if r.result == "failed" else r.result
        if r.result == "failed":
            what += f" (exit {r.exit_code}{', ' + r.step if r.step else ''})"
        size = human_size(r.size) if r.size and r.result in ("ok", "skipped") else "-"
        took = human_duration(r.seconds) if r.result != "not started" else "-"
        rows.append((r.name, what, took, size))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                              strict=True)))
             .rstrip() for row in rows]
    bad = [r for r in results if r.result not in ("ok", "skipped")]
    lines.append(f"{len(results) - len(bad)} of {len(results)} builds succeeded"
                 + (f"; failed: {', '.join(r.name for r in bad)}" if bad else ""))
    return "\n".join(lines)


def exit_code(results: Sequence[Result], signum: int = 0) -> int:
    if signum:
        return 128 + signum
    codes = {r.exit_code for r in results if r.result not in ("ok", "skipped")}
    if not codes:
        return EXIT_OK
    return codes.pop() if len(codes) == 1 else EXIT_FAILED
