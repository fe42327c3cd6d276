"""Runs one build: steps, events, the failure report, and what is kept for a post-mortem."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from baker.errors import BakerError, Interrupted, StepError, TimedOut
from baker.fsutil import remove
from baker.incremental import Fingerprint
from baker.layers import Parent
from baker.machine import registry
from baker.output import Failure, Reporter, setup_logging, teardown_logging
from baker.paths import cache_root
from baker.pipeline import Pipeline, StepTiming
from baker.secrets import MASKER
from baker.state import BuildOptions, BuildState
from baker.steps import plan_steps
from baker.template.model import Template


@dataclass
class BuildOutcome:
    ok: bool
    exit_code: int
    output_dir: Path
    error: BaseException | None = None
    logs_dir: Path | None = None
    timings: list[StepTiming] = field(default_factory=list)
    skipped: bool = False  # --if-changed found nothing changed: nothing was built


def run_build(
    t: Template, options: BuildOptions, reporter: Reporter, *, verbose: bool = False
) -> BuildOutcome:
    """One build of `t`; its events carry its name (a layer's parent's events carry the parent's)."""
    with reporter.building(t.name):
        return _run_build(t, options, reporter, verbose)


def _run_build(t: Template, options: BuildOptions, reporter: Reporter, verbose: bool) -> BuildOutcome:
    """One build of one output, holding that output's lock; with --if-changed, maybe no build at all.

    A layer (source.image) first brings its parent template up to date (built with --if-changed,
    queueing behind any build of it), then builds while holding the parent's output as a reader, so
    the base under its overlay cannot be rebuilt away mid-build.
    """
    from baker.incremental import OutputLocked

    try:
        if not t.source.image:
            return _run_locked(t, t, options, reporter, verbose, None)
        from baker.incremental import output_lock
        from baker.layers import parse_ref, resolve_parent, with_parent_source
        from baker.layers.parent import parent_output_dir

        ref = parse_ref(t.source.image, t.path.parent)
        parent_t = None
        if ref.template is not None:
            from baker.template import load_template

            parent_t = load_template(ref.template, environ=t.render_state.environ if t.render_state else None)
            popts = dataclasses.replace(options, output_dir=parent_output_dir(parent_t, options.output_dir),
                                        if_changed=True, force=False, wait_lock=True, deps_file=None)
            if popts.output_dir == options.output_dir:
                raise BakerError(f"{t.name} and its parent {parent_t.name} would share {options.output_dir}",
                                 hint="give the layer another name")
            done = run_build(parent_t, popts, reporter, verbose=verbose)
            if not done.ok:
                return dataclasses.replace(done, output_dir=options.output_dir)
        reader = output_lock(parent_output_dir(parent_t, options.output_dir), template=str(t.path),
                             wait=True, shared=True) if parent_t is not None else contextlib.nullcontext()
        with reader:
            parent = resolve_parent(t, options.output_dir, options.store)
            assert parent is not None
            reporter.event("info", message=f"{t.name} builds on {parent.name} {parent.version} "
                                           f"({parent.artifact}, sha256 {parent.sha256[:16]}...)")
            return _run_locked(with_parent_source(t, parent), t, options, reporter, verbose, parent)
    except OutputLocked as e:
        return _refused(reporter, "lock", e, options.output_dir)
    except BakerError as e:
        return _refused(reporter, "parent" if t.source.image else "prepare", e, options.output_dir)


def _refused(reporter: Reporter, step: str, e: BakerError, out: Path) -> BuildOutcome:
    """A build stopped before its pipeline began: nothing to unwind, nothing touched."""
    reporter.failure(Failure(step=step, message=str(e), tails={}, logs=None, exit_code=e.exit_code,
                             debug=None))
    return BuildOutcome(False, e.exit_code, out, e)


def _run_locked(t: Template, written: Template, options: BuildOptions, reporter: Reporter, verbose: bool,
                parent: Parent | None) -> BuildOutcome:
    """`written` is the template as the user wrote it: its Make rule names the parent's manifest."""
    from baker.incremental import decide, fingerprint, output_lock, restore, write_deps_file

    out = options.output_dir
    with output_lock(out, template=str(t.path), wait=options.wait_lock,
                     notice=lambda kind, message: reporter.event(kind, message=message)):
        fp = fingerprint(t)
        if options.if_changed and not options.force:
            decision = decide(fp, out, name=t.name, store=options.store)
            if decision.up_to_date:
                restore(decision, out, options.store)
                reporter.event("build_skipped", name=t.name, reason=decision.reason, output_dir=str(out))
                if options.deps_file is not None:
                    write_deps_file(options.deps_file, written, out)
                return BuildOutcome(True, 0, out, skipped=True)
            reporter.event("build_reason", name=t.name, reason=f"{t.name}: {decision.reason}",
                           changed=list(decision.changed))
        outcome = _run(t, options, reporter, fp, verbose, parent)
        if outcome.ok and options.deps_file is not None:
            write_deps_file(options.deps_file, written, out)
        return outcome


def _run(t: Template, options: BuildOptions, reporter: Reporter, fp: Fingerprint, verbose: bool,
         parent: Parent | None) -> BuildOutcome:
    log = logging.getLogger("baker.build")
    log_dir = Path(tempfile.mkdtemp(prefix=f"baker-log-{t.name}-"))
    os.chmod(log_dir, 0o700)
    log_file = log_dir / "build.log"
    handlers = setup_logging(reporter, log_file, verbose)
    cancel = threading.Event()
    steps = plan_steps(t, apt_cache=options.apt_cache)
    reported: list[BaseException] = []

    def tails() -> dict[str, str]:
        """Called at the moment of failure, before cleanup: the last chance to see the VM."""
        out: dict[str, str] = {}
        m = state.machine
        if m is not None:
            out["serial console (last lines)"] = m.serial_tail(25)
            if m.proc is not None and m.proc.poll() is None:  # a panicked or paused guest's screen too
                m.screendump(log_dir / "failure-screen.png")
            if not m.serial_tail(1) and (fw := m.firmware_tail(8)):
                out["firmware log (last lines)"] = fw
            err = m.stderr_tail(5)
            if err:
                out["qemu stderr"] = err
        _snapshot(state, log_dir)
        comm = state.comm
        if comm is not None and comm.last_output_tail:
            out["last command output"] = "\n".join(comm.last_output_tail[-20:])
        return {k: MASKER.mask(v) for k, v in out.items() if v}

    def hold(e: BaseException) -> None:
        """--on-error=abort: report now, then keep the VM up for debugging until Ctrl-C."""
        _report_failure(reporter, e, None, state, options)
        reported.append(e)
        m = state.machine
        if m is None or m.alive() is not None:
            return
        reporter.event("info", message="holding the VM for debugging; press Ctrl-C (or send SIGTERM) "
                                       "to stop it and clean up")
        while m.alive() is None:
            time.sleep(0.5)

    pipeline = Pipeline(steps, on_event=reporter.event, tails=tails,
                        hold=hold if options.on_error == "abort" else None, on_force_exit=registry.kill_all)
    # the manifest's step timings are the pipeline's own record, not a second copy
    state = BuildState(template=t, options=options, cancel=cancel, log=log, log_file=log_file,
                       timings=pipeline.result.timings, fingerprint=fp, parent=parent)
    reporter.event("build_start", name=t.name, template=str(t.path), steps=[s.name for s in steps],
                   output_dir=str(options.output_dir))
    started = time.monotonic()
    timer = _Deadline(options.timeout)
    try:
        with timer:
            pipeline.run(state, cancel)
    except BaseException as e:  # every failure becomes a report and an exit code
        if timer.fired and isinstance(e, Interrupted) and options.timeout:
            e = TimedOut(options.timeout, e.step)
        logs = _keep_logs(state, log_dir)
        outcome = BuildOutcome(False, _exit_code(e), options.output_dir, e, logs, pipeline.result.timings)
        if reported:
            reporter.event("info", message=f"logs kept in {logs}")
        else:
            _report_failure(reporter, e, logs, state, options)
        teardown_logging(handlers)
        remove(log_dir)
        return outcome
    reporter.event("build_done", name=t.name, seconds=round(time.monotonic() - started, 1),
                   output_dir=str(options.output_dir),
                   artifacts=[str(options.output_dir / f.path.name) for r in state.exports for f in r.files])
    teardown_logging(handlers)
    remove(log_dir)
    return BuildOutcome(True, 0, options.output_dir, timings=pipeline.result.timings)


class _Deadline:
    """--timeout: SIGTERM to ourselves, so the build unwinds exactly as on an external SIGTERM.

    `fired` tells the two apart afterwards; the lock makes sure no signal is sent once the pipeline
    has returned (nothing would catch it then).
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Deadline:
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            logging.getLogger("baker.build").warning("--timeout of %gs reached: stopping the build",
                                                     self.seconds)
            os.kill(os.getpid(), signal.SIGTERM)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()


def _exit_code(e: BaseException) -> int:
    if isinstance(e, StepError) and isinstance(e.cause, BaseException):
        return getattr(e.cause, "exit_code", 1)
    if isinstance(e, BakerError):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    return 1


def _snapshot(state: BuildState, log_dir: Path) -> None:
    """Copy the VM's logs and screenshots out of the work dir, which cleanup is about to remove."""
    files: list[Path] = []
    if state.machine is not None:
        files += [state.machine.spec.serial_log, state.machine.spec.stderr_log]
    if state.work_dir is not None and state.work_dir.exists():
        files += sorted(state.work_dir.glob("screen-*.png"))
    for src in files:
        try:
            shutil.copyfile(src, log_dir / src.name)
        except OSError:
            pass


def _keep_logs(state: BuildState, log_dir: Path) -> Path | None:
    """Move logs somewhere that survives cleanup; never into the output dir (no half builds there)."""
    try:
        _snapshot(state, log_dir)  # signals unwind without calling tails(); harmless when already done
        dest = cache_root() / "logs" / f"{state.template.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
        for src in log_dir.iterdir():
            shutil.copyfile(src, dest / src.name)
        return dest
    except OSError:
        return None


def _report_failure(reporter: Reporter, e: BaseException, logs: Path | None, state: BuildState,
                    options: BuildOptions) -> None:
    reporter.failure(Failure(step=getattr(e, "step", None), message=MASKER.mask(str(e)),
                             tails=e.tails if isinstance(e, StepError) else {},
                             logs=str(logs) if logs else None, exit_code=_exit_code(e),
                             debug=_debug_access(e, state, options)))


def _debug_access(e: BaseException, state: BuildState, options: BuildOptions) -> dict[str, str] | None:
    """How to reach the VM that --on-error=abort keeps running, or None."""
    m = state.machine
    if options.on_error != "abort" or isinstance(e, Interrupted) or m is None or m.alive() is not None \
            or state.keys is None:
        return None
    c = state.template.communicator
    port = m.host_ports.get(c.ssh_port)
    return {"ssh": f"ssh -i {state.keys.client_private_path} -p {port} -o StrictHostKeyChecking=no "
                   f"{c.ssh_username}@127.0.0.1",
            "serial_log": str(m.spec.serial_log), "work_dir": str(state.work_dir)}
