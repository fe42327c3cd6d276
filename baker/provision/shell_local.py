"""The `shell-local` provisioner: commands on the build host, streamed to the log, secrets masked.

Started with baker.proc.spawn rather than run() because output must stream line by line while the
command runs, and a timeout or cancel must kill the whole process group.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import IO

from baker.errors import BakerError
from baker.proc import spawn
from baker.provision.base import (
    ProvisionCancelled,
    ProvisionContext,
    ProvisionError,
    describe,
    merged_env,
    script_paths,
    token,
)
from baker.provision.shell import inline_script
from baker.secrets import MASKER
from baker.template.model import ShellLocalProvisioner
from baker.units import parse_duration

TAIL_LINES = 50


def commands_of(p: ShellLocalProvisioner, ctx: ProvisionContext, what: str) -> list[tuple[str, list[str]]]:
    """(label, argv) for each thing to run: inline as one `/bin/sh -e` script, then script(s)."""
    out: list[tuple[str, list[str]]] = []
    if p.inline:
        path = ctx.work_dir / f"shell-local-{token()}.sh"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(inline_script(p.inline))
        out.append(("inline", ["/bin/sh", "-e", str(path)]))
    for path in script_paths(ctx, [p.script, *p.scripts]):
        if not path.is_file():
            raise ProvisionError(what, f"script {path} does not exist")
        # an executable script picks its interpreter with its shebang; anything else runs under sh
        argv = [str(path)] if os.access(path, os.X_OK) else ["/bin/sh", str(path)]
        out.append((path.name, argv))
    return out


def run_shell_local(p: ShellLocalProvisioner, ctx: ProvisionContext) -> None:
    what = describe(p, ctx.index)
    env = merged_env(ctx, p.environment, what)  # spawn adds it on top of the host's environment
    timeout = parse_duration(p.timeout) if p.timeout else None
    deadline = None if timeout is None else time.monotonic() + timeout
    commands = commands_of(p, ctx, what)
    if not commands:
        raise ProvisionError(what, "nothing to run: give inline, script or scripts")
    for label, argv in commands:
        ctx.log.info("%s: running %s on the host", what, label)
        rc, tail = run_streaming(argv, env=env, ctx=ctx, deadline=deadline, what=what)
        if rc not in p.valid_exit_codes:
            raise ProvisionError(
                what, f"{label} exited with {rc} (valid: {', '.join(map(str, p.valid_exit_codes))})",
                tail=tail)


def run_streaming(argv: list[str], *, env: dict[str, str], ctx: ProvisionContext, deadline: float | None,
                  what: str) -> tuple[int, list[str]]:
    """Run argv in its own process group, log each output line as it comes; kill on timeout/cancel."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lock = threading.Lock()
    try:
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ctx.template_dir,
                     start_new_session=True)
    except (BakerError, OSError) as e:
        cause = e.__cause__ if isinstance(e, BakerError) else e  # spawn wraps a missing interpreter
        reason = cause.strerror if isinstance(cause, OSError) else str(e)
        raise ProvisionError(what, f"cannot run {argv[0]}: {reason}") from e

    def pump(stream: IO[bytes], prefix: str) -> None:
        for raw in iter(stream.readline, b""):
            line = MASKER.mask(raw.rstrip(b"\r\n").decode(errors="replace"))
            with lock:
                tail.append(f"{prefix} {line}")
            ctx.log.info("%s %s", prefix, line)
        stream.close()

    assert proc.stdout is not None and proc.stderr is not None
    pumps = [threading.Thread(target=pump, args=(proc.stdout, "out:"), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, "err:"), daemon=True)]
    for t in pumps:
        t.start()
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if ctx.cancel.is_set():
                _kill_group(proc)
                raise ProvisionCancelled(f"{what}: cancelled")
            if deadline is not None and time.monotonic() > deadline:
                _kill_group(proc)
                for t in pumps:
                    t.join(2)
                raise ProvisionError(what, "timed out", tail=list(tail),
                                     hint="raise the provisioner's timeout")
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    for t in pumps:
        t.join(5)  # a background child holding the pipes open must not hang the build
    return rc, list(tail)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
