"""The step pipeline: order, reverse unwinding, partial-step cleanup, abort mode, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from baker.errors import BakerError, Interrupted, StepError
from baker.pipeline import Pipeline


class Rec:
    def __init__(self, name: str, journal: list[str], fail: BaseException | None = None) -> None:
        self.name = name
        self.journal = journal
        self.fail = fail

    def run(self, state) -> None:
        self.journal.append(f"run {self.name}")
        if self.fail:
            raise self.fail

    def cleanup(self, state) -> None:
        self.journal.append(f"undo {self.name}")


def test_success_runs_in_order_then_undoes_in_reverse():
    j: list[str] = []
    Pipeline([Rec("a", j), Rec("b", j), Rec("c", j)]).run(None, threading.Event())
    assert j == ["run a", "run b", "run c", "undo c", "undo b", "undo a"]


def test_failure_names_step_and_undoes_the_failed_step_too():
    j: list[str] = []
    p = Pipeline([Rec("a", j), Rec("b", j, BakerError("boom")), Rec("c", j)],
                 tails=lambda: {"serial": "last line"})
    with pytest.raises(StepError) as ei:
        p.run(None, threading.Event())
    assert ei.value.step == "b"
    assert "step 'b' failed: boom" in str(ei.value)
    assert ei.value.tails == {"serial": "last line"}
    assert j == ["run a", "run b", "undo b", "undo a"]
    assert [(t.name, t.status) for t in p.result.timings] == [("a", "ok"), ("b", "failed")]


def test_unexpected_exception_is_wrapped_with_its_type():
    j: list[str] = []
    with pytest.raises(StepError, match="KeyError"):
        Pipeline([Rec("a", j, KeyError("x"))]).run(None, threading.Event())


def test_a_failing_cleanup_does_not_stop_the_others():
    j: list[str] = []

    class BadUndo(Rec):
        def cleanup(self, state) -> None:
            raise RuntimeError("cleanup broke")

    Pipeline([Rec("a", j), BadUndo("b", j), Rec("c", j)]).run(None, threading.Event())
    assert j == ["run a", "run b", "run c", "undo c", "undo a"]


def test_abort_mode_holds_everything_until_released_then_cleans_up():
    j: list[str] = []
    p = Pipeline([Rec("a", j), Rec("b", j, BakerError("boom"))],
                 hold=lambda e: j.append(f"hold {type(e).__name__}"))
    with pytest.raises(StepError):
        p.run(None, threading.Event())
    assert j == ["run a", "run b", "hold StepError", "undo b", "undo a"]


def test_cancel_before_a_step_unwinds():
    j: list[str] = []
    cancel = threading.Event()

    class Cancels(Rec):
        def run(self, state) -> None:
            super().run(state)
            cancel.set()

    with pytest.raises(Interrupted):
        Pipeline([Cancels("a", j), Rec("b", j)]).run(None, cancel)
    assert j == ["run a", "undo a"]


SIGNAL_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from baker.pipeline import Pipeline
    from baker.errors import Interrupted
    journal = open(sys.argv[1], "a")
    class S:
        def __init__(s, n): s.name = n
        def run(s, st):
            journal.write(f"run {s.name}\\n"); journal.flush()
            if s.name == "slow":
                print("ready", flush=True); time.sleep(60)
        def cleanup(s, st):
            journal.write(f"undo {s.name}\\n"); journal.flush()
    try:
        Pipeline([S("a"), S("slow"), S("never")]).run(None, threading.Event())
    except Interrupted as e:
        sys.exit(e.exit_code)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_step_unwinds_and_exits_128_plus_signal(tmp_path: Path, sig: int):
    journal = tmp_path / "journal"
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(journal)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[1])
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, sig)
    assert proc.wait(20) == 128 + sig
    assert journal.read_text().split("\n")[:-1] == ["run a", "run slow", "undo slow", "undo a"]


SWALLOW_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from baker.pipeline import Pipeline
    from baker.errors import Interrupted
    class S:
        def __init__(s, name): s.name = name
        def run(s, st):
            if s.name == "swallows":
                try:
                    print("ready", flush=True)
                    time.sleep(60)
                except BaseException:
                    pass  # a step that catches too much must not change the exit code
        def cleanup(s, st):
            pass
    try:
        Pipeline([S("swallows"), S("never")]).run(None, threading.Event())
    except Interrupted as e:
        sys.exit(e.exit_code)
""")


def test_a_signal_a_step_swallowed_still_exits_with_that_signals_code():
    proc = subprocess.Popen([sys.executable, "-c", SWALLOW_SCRIPT], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 143


MID_WRITE_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from baker.errors import Interrupted
    from baker.output import Reporter, setup_logging
    from baker.pipeline import Pipeline

    class SlowStream:
        '''stdout that is busy (a slow reader, a full pipe) exactly when the signal arrives'''
        first = True
        def write(self, text):
            if self.first:
                self.first = False
                print("ready", file=sys.stderr, flush=True)
                time.sleep(60)
            sys.stdout.write(text)
        def flush(self):
            sys.stdout.flush()
        def isatty(self):
            return False

    reporter = Reporter("json", stream=SlowStream())
    setup_logging(reporter, None)
    class S:
        name = "talks"
        def run(s, st):
            reporter.event("info", message="a line the signal interrupts")
        def cleanup(s, st):
            pass
    try:
        Pipeline([S()]).run(None, threading.Event())
    except Interrupted as e:
        sys.exit(e.exit_code)
""")


def test_a_signal_during_output_does_not_deadlock():
    """The signal handler logs; if that waited for the lock the interrupted write holds, baker (and
    the QEMU it should stop) would hang forever."""
    proc = subprocess.Popen([sys.executable, "-c", MID_WRITE_SCRIPT], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=Path(__file__).parents[1])
    assert proc.stderr.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)
    try:
        assert proc.wait(20) == 143
    finally:
        proc.kill()
