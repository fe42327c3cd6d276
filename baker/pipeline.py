"""The build as a pipeline of steps, each able to undo itself; failures and signals unwind in reverse.

Like Packer's multistep, but every step's cleanup is registered *before* it runs, so a step that fails
halfway still undoes what it did. Cleanups run through an ExitStack, newest first, and each one is
isolated: a failing cleanup is logged and the others still run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from baker.errors import BakerError, Interrupted, StepError

log = logging.getLogger("baker.pipeline")


class Step(Protocol):
    name: str

    def run(self, state: Any) -> None: ...

    def cleanup(self, state: Any) -> None: ...


@dataclass
class StepTiming:
    name: str
    seconds: float
    status: str  # "ok" | "failed" | "skipped"


@dataclass
class PipelineResult:
    timings: list[StepTiming] = field(default_factory=list)


@contextlib.contextmanager
def signal_guard(cancel: threading.Event,
                 on_force_exit: Callable[[], None] | None = None) -> Iterator[dict[str, int]]:
    """First SIGINT/SIGTERM: raise Interrupted so steps unwind. Second: `on_force_exit`, then exit.

    Yields a dict whose "signum" is set once a signal arrived, so callers can tell an interrupted
    build from a failed one even when a step turned the Interrupted into an error of its own.
    """
    state = {"count": 0, "signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, _frame: Any) -> None:
        state["count"] += 1
        state["signum"] = signum
        cancel.set()
        if state["count"] == 1:
            log.warning("received %s: stopping the build and cleaning up (send again to force)",
                        signal.Signals(signum).name)
            raise Interrupted(signum)
        if on_force_exit is not None:  # first, before anything that could block (logging, output)
            on_force_exit()
        with contextlib.suppress(Exception):
            log.error("received %s again: exited without cleanup", signal.Signals(signum).name)
        os._exit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Pipeline:
    """Runs steps in order; on failure or signal, undoes them newest-first (after `hold`, if set)."""

    def __init__(self, steps: Sequence[Step], *, on_event: Callable[..., None] | None = None,
                 tails: Callable[[], dict[str, str]] | None = None,
                 hold: Callable[[BaseException], None] | None = None,
                 on_force_exit: Callable[[], None] | None = None) -> None:
        """`on_event(kind, **fields)` sees step_start/step_done; `tails()` is read at the moment a step
        fails; `hold(error)` (--on-error=abort) runs before unwinding and blocks while the user debugs;
        `on_force_exit()` runs on a second signal, before exiting without cleanup."""
        self.steps = list(steps)
        self.on_force_exit = on_force_exit  # a second signal: kill what must not outlive us
        self.on_event = on_event or (lambda *a, **k: None)
        self.tails = tails or dict
        self.hold = hold
        self.result = PipelineResult()  # the one record of step timings (the manifest reads it)

    def run(self, state: Any, cancel: threading.Event) -> PipelineResult:
        with signal_guard(cancel, self.on_force_exit) as signals, contextlib.ExitStack() as stack:
            try:
                self._run_steps(state, cancel, stack)
            except Interrupted as e:
                if signals["signum"] and e.signum != signals["signum"]:
                    # noticed between steps (cancel set, the handler's exception swallowed): the exit
                    # code must still name the signal that arrived, SIGTERM → 143
                    raise Interrupted(signals["signum"], e.step) from e
                raise  # a signal always cleans up, even with --on-error=abort
            except BaseException as e:
                if signals["signum"]:
                    raise Interrupted(signals["signum"], getattr(e, "step", None)) from e
                if self.hold is not None:
                    try:
                        self.hold(e)  # the VM stays up until the user lets go (Ctrl-C)
                    except Interrupted:
                        pass
                raise
        return self.result

    def _run_steps(self, state: Any, cancel: threading.Event, stack: contextlib.ExitStack) -> None:
        total = len(self.steps)
        for index, step in enumerate(self.steps, 1):
            if cancel.is_set():
                raise Interrupted(signal.SIGINT, step.name)
            stack.callback(self._cleanup, step, state)
            self.on_event("step_start", step=step.name, index=index, total=total)
            start = time.monotonic()
            try:
                step.run(state)
            except Interrupted as e:
                self._record(step.name, start, "failed")
                raise Interrupted(e.signum, step.name) from None
            except StepError:
                self._record(step.name, start, "failed")
                raise
            except BakerError as e:
                self._record(step.name, start, "failed")
                raise StepError(step.name, e, tails=self._safe_tails()) from e
            except Exception as e:
                self._record(step.name, start, "failed")
                log.debug("unexpected error in step %s", step.name, exc_info=True)
                raise StepError(step.name, f"{type(e).__name__}: {e}", tails=self._safe_tails()) from e
            seconds = self._record(step.name, start, "ok")
            self.on_event("step_done", step=step.name, index=index, total=total, seconds=round(seconds, 2))

    def _safe_tails(self) -> dict[str, str]:
        try:
            return self.tails()
        except Exception:  # tails are a courtesy; never hide the real failure
            return {}

    def _record(self, name: str, start: float, status: str) -> float:
        seconds = time.monotonic() - start
        self.result.timings.append(StepTiming(name, round(seconds, 2), status))
        return seconds

    def _cleanup(self, step: Step, state: Any) -> None:
        try:
            step.cleanup(state)
        except Exception as e:  # one broken cleanup must not stop the others
            log.warning("cleanup of step '%s' failed: %s", step.name, e)
