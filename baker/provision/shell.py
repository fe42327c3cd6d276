"""The `shell` provisioner: upload a script, run it (through sudo by default), check its exit code."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping

from baker.communicator.ssh import CommandTimeout, SSHCommunicator, SSHDisconnected
from baker.provision.base import (
    ProvisionContext,
    ProvisionError,
    cancellable_sleep,
    describe,
    merged_env,
    script_paths,
    token,
)
from baker.template.model import ShellProvisioner
from baker.units import parse_duration

INLINE_SHEBANG = "#!/bin/sh -e"
# after an expected disconnect we poll until the connection is stable; with none seen we watch this long
DISCONNECT_GRACE = 10.0
SETTLE_PAUSE = 2.0

_PLACEHOLDER = re.compile(r"\{\{\s*\.?(path|vars)\s*\}\}", re.IGNORECASE)


def inline_script(lines: list[str]) -> str:
    """Inline commands as one script that stops at the first failure, like Packer."""
    return INLINE_SHEBANG + "\n" + "\n".join(lines) + "\n"


def vars_string(env: Mapping[str, str]) -> str:
    """`A='x y' B=z`: each value shell-quoted so spaces, quotes and $ arrive verbatim."""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def default_execute_command(sudo: bool) -> str:
    # `sudo env A=.. script`: sudo's env_reset would drop variables exported any other way
    if sudo:
        return "chmod +x {{ path }}; sudo -n env {{ vars }} {{ path }}"
    return "chmod +x {{ path }}; {{ vars }} {{ path }}"


def render_execute_command(template: str, path: str, env: Mapping[str, str]) -> str:
    """Fill `{{ path }}`/`{{ vars }}` (and Packer's `{{.Path}}`/`{{.Vars}}`)."""
    values = {"path": shlex.quote(path), "vars": vars_string(env)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1).lower()], template)


def scripts_of(p: ShellProvisioner, ctx: ProvisionContext) -> list[tuple[str, bytes]]:
    """(label, content) of each script to run, in order: inline first, then script, then scripts."""
    out: list[tuple[str, bytes]] = []
    if p.inline:
        out.append(("inline", inline_script(p.inline).encode()))
    for path in script_paths(ctx, [p.script, *p.scripts]):
        try:
            out.append((path.name, path.read_bytes()))
        except OSError as e:
            raise ProvisionError(describe(p, ctx.index), f"cannot read script {path}: {e.strerror}") from e
    return out


def remote_name(folder: str, label: str, n: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:40]
    return f"{folder.rstrip('/') or ''}/baker-{token()}-{n}-{safe}"


def run_shell(p: ShellProvisioner, ctx: ProvisionContext) -> None:
    what = describe(p, ctx.index)
    comm = ctx.comm
    if comm is None:
        raise ProvisionError(what, "needs an SSH communicator (communicator.type is none)")
    env = merged_env(ctx, p.environment, what)
    template = p.execute_command or default_execute_command(p.sudo)
    timeout = parse_duration(p.timeout) if p.timeout else None
    deadline = None if timeout is None else time.monotonic() + timeout
    scripts = scripts_of(p, ctx)
    if not scripts:
        raise ProvisionError(what, "nothing to run: give inline, script or scripts")
    disconnected = False
    for n, (label, content) in enumerate(scripts):
        if ctx.cancel.is_set():
            raise ProvisionError(what, "cancelled")
        remote = remote_name(p.remote_folder, label, n)
        comm.upload_bytes(content, remote, 0o700)
        command = render_execute_command(template, remote, env)
        ctx.log.info("%s: running %s", what, label)
        remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
        try:
            rc = comm.run(command, timeout=remaining)
        except SSHDisconnected:
            if not p.expect_disconnect:
                raise ProvisionError(what, "the SSH connection dropped while the script ran",
                                     tail=comm.last_output_tail,
                                     hint="if the script reboots or restarts sshd, set expect_disconnect: "
                                          "true") from None
            ctx.log.info("%s: disconnected as expected; reconnecting", what)
            disconnected = True
            reconnect_settled(comm, ctx)
            _remove(comm, remote, ctx)
            continue
        except CommandTimeout as e:
            raise ProvisionError(what, f"timed out after {timeout:g}s", tail=comm.last_output_tail,
                                 hint="raise the provisioner's timeout") from e
        tail = list(comm.last_output_tail)
        _remove(comm, remote, ctx)
        comm.last_output_tail = tail  # the report wants the script's output, not the cleanup's
        if rc not in p.valid_exit_codes:
            raise ProvisionError(
                what, f"{label} exited with {rc} (valid: {', '.join(map(str, p.valid_exit_codes))})",
                tail=tail)
    if p.expect_disconnect and not disconnected:
        _await_pending_disconnect(comm, ctx, what)


def _remove(comm: SSHCommunicator, remote: str, ctx: ProvisionContext) -> None:
    """Best effort: a leftover script in /tmp is untidy, not fatal (and a reboot may have taken it)."""
    try:
        comm.run(f"rm -f {shlex.quote(remote)} 2>/dev/null || sudo -n rm -f {shlex.quote(remote)}",
                 timeout=60, stdout_cb=ctx.log.debug, stderr_cb=ctx.log.debug)
    except Exception as e:  # cleanup must not mask the real outcome
        ctx.log.debug("could not remove %s: %s", remote, e)


def reconnect_settled(comm: SSHCommunicator, ctx: ProvisionContext) -> None:
    """Reconnect and make sure the new session survives a moment: the old sshd of a guest that is
    going down can still accept a connection and then die under the next provisioner."""
    deadline = time.monotonic() + ctx.reconnect_timeout
    while True:
        cancellable_sleep(ctx, SETTLE_PAUSE)
        comm.reconnect(max(1.0, deadline - time.monotonic()))
        cancellable_sleep(ctx, SETTLE_PAUSE)
        try:
            comm.run("true", timeout=60, stdout_cb=ctx.log.debug, stderr_cb=ctx.log.debug)
            return
        except (SSHDisconnected, CommandTimeout) as e:
            ctx.log.debug("connection after reconnect did not hold (%s); reconnecting again", e)


def _await_pending_disconnect(comm: SSHCommunicator, ctx: ProvisionContext, what: str) -> None:
    """`reboot` often returns before the connection drops: watch a little, and reconnect if it does."""
    end = time.monotonic() + DISCONNECT_GRACE
    while time.monotonic() < end:
        try:
            comm.run("true", timeout=30, stdout_cb=ctx.log.debug, stderr_cb=ctx.log.debug)
        except (SSHDisconnected, CommandTimeout):
            ctx.log.info("%s: disconnected as expected; reconnecting", what)
            reconnect_settled(comm, ctx)
            return
        cancellable_sleep(ctx, min(2.0, max(0.0, end - time.monotonic())))
