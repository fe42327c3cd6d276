"""The one place baker runs host commands: logs the argv, raises CommandError with stderr on failure."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from baker.errors import BakerError, CommandError

log = logging.getLogger("baker.proc")


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | bytes | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell); text output; raise CommandError when check and rc != 0."""
    args = [os.fspath(a) for a in argv]
    log.debug("$ %s", shlex.join(args))
    full_env = None
    if env is not None:
        full_env = {**os.environ, **env}
    try:
        proc = subprocess.run(
            args,
            input=input.decode() if isinstance(input, bytes) else input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as e:
        raise BakerError(
            f"{args[0]}: command not found", hint=hint or "install it (see README: make setup)"
        ) from e
    except subprocess.TimeoutExpired as e:
        out = e.stderr or e.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise CommandError(args, -1, "", f"timed out after {timeout}s\n{text}", hint=hint) from e
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout or "", proc.stderr or "", hint=hint)
    return proc


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    start_new_session: bool = False,
    hint: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process (QEMU, a local provisioner) logged like `run`; the caller reaps it.

    `start_new_session` puts it in its own process group, so the caller can kill all it started.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("$ %s &", shlex.join(args))
    try:
        return subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=stderr,
            env={**os.environ, **env} if env is not None else None, cwd=cwd,
            preexec_fn=preexec_fn, start_new_session=start_new_session, close_fds=True,
        )
    except FileNotFoundError as e:
        raise BakerError(
            f"{args[0]}: command not found", hint=hint or "install it (see README: make setup)"
        ) from e
