"""Provisioners by type name, and the retry/pause policy common to all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from baker.communicator.ssh import CommandTimeout, SSHDisconnected
from baker.provision.base import (
    ProvisionCancelled,
    ProvisionContext,
    ProvisionError,
    cancellable_sleep,
    describe,
)
from baker.provision.file import run_file
from baker.provision.shell import run_shell
from baker.provision.shell_local import run_shell_local
from baker.units import parse_duration

PROVISIONERS: dict[str, Callable[[Any, ProvisionContext], None]] = {
    "shell": run_shell,
    "file": run_file,
    "shell-local": run_shell_local,
}

RETRY_PAUSE = 5.0

__all__ = ["PROVISIONERS", "ProvisionCancelled", "ProvisionContext", "ProvisionError", "run_provisioner"]


def run_provisioner(p: Any, ctx: ProvisionContext, *, index: int | None = None) -> None:
    """Run one provisioner: pause_before, then up to 1 + max_retries attempts of the whole thing."""
    if index is not None:
        ctx.index = index
    what = describe(p, ctx.index)
    fn = PROVISIONERS.get(p.type)
    if fn is None:
        raise ProvisionError(what, f"unknown provisioner type {p.type!r}")
    pause = parse_duration(p.pause_before or 0)
    if pause > 0:
        ctx.log.info("%s: pausing %.0fs before starting", what, pause)
        cancellable_sleep(ctx, pause)
    attempts = 1 + max(0, int(getattr(p, "max_retries", 0) or 0))
    for attempt in range(1, attempts + 1):
        try:
            fn(p, ctx)
            return
        except (ProvisionError, SSHDisconnected, CommandTimeout) as e:
            if attempt == attempts:
                if isinstance(e, ProvisionError):
                    raise
                raise ProvisionError(what, str(e), tail=ctx.comm.last_output_tail if ctx.comm else None,
                                     hint=e.hint) from e
            ctx.log.warning("%s failed (attempt %d of %d), retrying in %.0fs: %s", what, attempt, attempts,
                            RETRY_PAUSE, e.message.splitlines()[0])
            cancellable_sleep(ctx, RETRY_PAUSE)
            if ctx.comm is not None and not ctx.comm.connected:
                ctx.comm.reconnect(ctx.reconnect_timeout)
