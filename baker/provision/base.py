"""What every provisioner gets, and the error that names the failing provisioner."""

from __future__ import annotations

import glob
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baker.communicator.ssh import ENV_NAME_HINT, bad_env_name
from baker.errors import BakerError

if TYPE_CHECKING:
    from baker.communicator.ssh import SSHCommunicator


@dataclass
class ProvisionContext:
    comm: SSHCommunicator | None
    log: logging.Logger
    template_dir: Path
    work_dir: Path
    # exported to every script (BAKER_BUILD_NAME, BAKER_HTTP_ADDR, ...); a provisioner's own environment wins
    build_env: dict[str, str] = field(default_factory=dict)
    reconnect_timeout: float = 600.0
    cancel: threading.Event = field(default_factory=threading.Event)
    index: int | None = None  # position in the template, for error messages


class ProvisionError(BakerError):
    """A provisioner failed; the message names it and carries the output tail."""

    def __init__(self, what: str, message: str, *, tail: list[str] | None = None, hint: str | None = None):
        self.what = what
        self.tail = list(tail or [])
        text = f"{what}: {message}"
        if self.tail:
            text += "\n" + "\n".join("  | " + line for line in self.tail[-20:])
        super().__init__(text, hint=hint)


class ProvisionCancelled(BakerError):
    """The build was cancelled while a provisioner waited or ran."""


def summary(p: Any, *, first_line: bool = False) -> str:
    """What a provisioner runs: its scripts, `source -> destination`, or `inline` (with `first_line`,
    the first inline command, cut to 40 characters). The one source of provisioner labels."""
    scripts = [s for s in [getattr(p, "script", None), *getattr(p, "scripts", [])] if s]
    if scripts:
        return ", ".join(str(s) for s in scripts)
    inline = getattr(p, "inline", None)
    if inline:
        if not first_line:
            return "inline"
        return inline[0] if len(inline[0]) <= 40 else inline[0][:37] + "..."
    if getattr(p, "destination", None):
        return f"{p.source or 'content'} -> {p.destination}"
    return ""


def describe(p: Any, index: int | None) -> str:
    """`provisioner[2] shell "install nginx" (scripts/setup.sh)`: enough to find it in the template."""
    head = f"provisioner[{index}] {p.type}" if index is not None else f"provisioner {p.type}"
    if getattr(p, "name", None):
        head += f' "{p.name}"'
    what = summary(p)
    return f"{head} ({what})" if what else head


def merged_env(ctx: ProvisionContext, environment: Mapping[str, Any], what: str) -> dict[str, str]:
    env = {**ctx.build_env, **{k: "" if v is None else str(v) for k, v in environment.items()}}
    bad = bad_env_name(env)
    if bad is not None:
        raise ProvisionError(what, f"invalid environment variable name {bad!r}", hint=ENV_NAME_HINT)
    return env


def token() -> str:
    return uuid.uuid4().hex[:10]


def resolve_local(ctx: ProvisionContext, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else ctx.template_dir / p


def script_paths(ctx: ProvisionContext, entries: list[str | None]) -> list[Path]:
    """Local script paths in order; glob patterns (the loader allows them) expand sorted, and a
    pattern matching nothing stays as-is so the caller reports it missing."""
    out: list[Path] = []
    for entry in entries:
        if not entry:
            continue
        if glob.has_magic(entry):
            matches = sorted(glob.glob(str(resolve_local(ctx, entry))))
            out.extend(Path(m) for m in matches or [str(resolve_local(ctx, entry))])
        else:
            out.append(resolve_local(ctx, entry))
    return out


def cancellable_sleep(ctx: ProvisionContext, seconds: float) -> None:
    if seconds > 0 and ctx.cancel.wait(seconds):
        raise ProvisionCancelled("build cancelled")
