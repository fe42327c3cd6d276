"""Several builds per template and per run, without QEMU: `builds:` in templates, --only/--except,
the runner with stand-in children (real processes printing events), its outputs and summary, and the
reporter's `build` field, progress and --log-file. The real thing is tests/test_e2e_multi.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from baker import cli
from baker.errors import TemplateError, TemplateErrors
from baker.events import event_problems
from baker.output import Reporter
from baker.runner import UsageError, plan
from baker.runner.board import JsonOut, PlainOut, TtyOut
from baker.runner.plan import Planned
from baker.runner.run import Runner
from baker.runner.summary import Result, exit_code, table
from baker.template.builds import build_names
from baker.template.loader import load_template
from tests.helpers.cli import run_main as run
from tests.helpers.faults import write_template
from tests.helpers.paths import ROOT

ESC = re.compile(r"\x1b")


TWO = """\
name: web
source: {cloud_image: {url: base.qcow2, checksum: none}}
machine: {memory: 1024, cpus: 2}
provisioners: [{type: shell, inline: ["echo {{ name }}"]}]
builds:
  - name: bios
  - name: uefi
    machine: {firmware: uefi, memory: 2048}
"""


def two(tmp: Path, body: str = TWO, name: str = "t.yaml") -> Path:
    (tmp / "base.qcow2").write_bytes(b"")
    return write_template(tmp / name, body)


def plain(tmp: Path, name: str) -> Path:
    (tmp / "base.qcow2").write_bytes(b"")
    return write_template(tmp / f"{name}.yaml",
                          f"name: {name}\nsource: {{cloud_image: {{url: base.qcow2, checksum: none}}}}\n")


def load(p: Path, b: str | None):
    return load_template(p, build=b)


# --- builds: in a template ---------------------------------------------------------------------------

def test_each_build_is_the_template_with_its_entry_merged_in(tmp_path: Path):
    t = two(tmp_path)
    assert build_names(t) == ["bios", "uefi"]
    bios, uefi = load_template(t, build="bios"), load_template(t, build="uefi")
    assert (bios.name, bios.machine.firmware, bios.machine.memory) == ("web-bios", "bios", 1024)
    assert (uefi.name, uefi.machine.firmware, uefi.machine.memory) == ("web-uefi", "uefi", 2048)
    assert uefi.machine.cpus == 2  # a mapping merges key by key: what the build leaves out is shared
    assert uefi.provisioners[0].inline == ["echo web-uefi"]  # {{ name }} is the build's full name
    # an overridden value's errors point into the builds: entry
    bad = two(tmp_path, TWO.replace("memory: 2048", "memory: lots"), "bad.yaml")
    with pytest.raises(TemplateError) as e:
        load_template(bad, build="uefi")
    assert str(e.value).startswith("bad.yaml:8:") or ":8:" in str(e.value)


def test_null_removes_a_key_and_lists_replace(tmp_path: Path):
    t = two(tmp_path, TWO + "  - name: small\n    machine: {memory: null}\n"
                             "    exports: [{type: qcow2}]\n")
    small = load_template(t, build="small")
    default = next(f.default for f in dataclasses.fields(small.machine) if f.name == "memory")
    assert small.machine.memory == default != 1024 and small.machine.cpus == 2
    assert [e.type for e in small.exports] == ["qcow2"]


def test_a_build_overrides_what_an_include_brings(tmp_path: Path):
    (tmp_path / "machine.yaml").write_text("machine: {memory: 1536, firmware: bios}\n")
    t = two(tmp_path, TWO.replace("machine: {memory: 1024, cpus: 2}\n", "include: machine.yaml\n"))
    bios, uefi = load_template(t, build="bios"), load_template(t, build="uefi")
    assert (bios.machine.memory, bios.machine.firmware) == (1536, "bios")
    assert (uefi.machine.memory, uefi.machine.firmware) == (2048, "uefi")


def test_a_template_with_builds_loads_one_build_at_a_time(tmp_path: Path):
    t = two(tmp_path)
    with pytest.raises(TemplateError, match="defines builds bios, uefi: name one"):
        load_template(t)
    with pytest.raises(TemplateError, match=r"no build 'uefl' \(did you mean 'uefi'\?\)"):
        load_template(t, build="uefl")
    with pytest.raises(TemplateError, match="has no builds: list"):
        load_template(plain(tmp_path, "p"), build="x")


@pytest.mark.parametrize("entries, says", [
    ("  - name: a\n  - name: a\n",
     "t.yaml:7:11: builds[1].name: duplicate build name 'a' (first given on line 6)"),
    ("  - name: a\n    provisioners: []\n",
     "t.yaml:7:5: builds[0].provisioners: a build cannot set 'provisioners'"),
    ("  - name: a\n    machin: {}\n",
     "builds[0].machin: unknown key 'machin' in a build (did you mean 'machine'?)"),
    ("  - {name: 'b c'}\n", "builds[0].name: build name 'b c' may only use letters"),
    ("  - {cpus: 2}\n", "builds[0].name: a build needs a name"),
    ("  - just-a-name\n", "builds[0]: expected a mapping with a 'name' key"),
])
def test_bad_build_entries_are_errors_with_file_line_col(tmp_path: Path, monkeypatch, entries: str,
                                                         says: str):
    monkeypatch.chdir(tmp_path)
    two(tmp_path, TWO.split("builds:")[0] + "builds:\n" + entries)
    with pytest.raises((TemplateError, TemplateErrors)) as e:
        build_names(Path("t.yaml"))
    assert says in str(e.value)
    code, _, err = run("validate", "t.yaml")
    assert code == 2 and says in err


def test_builds_must_be_a_non_empty_list(tmp_path: Path):
    t = two(tmp_path, TWO.split("builds:")[0] + "builds: []\n")
    with pytest.raises(TemplateError, match="'builds' must be a non-empty list"):
        build_names(t)


# --- which builds a run makes --------------------------------------------------------------------------

def test_only_and_except_select_by_build_or_full_name(tmp_path: Path):
    t, p = two(tmp_path), plain(tmp_path, "other")
    names = lambda **kw: [x.name for x in plan([t, p], load, **kw)]  # noqa: E731
    assert names() == ["web-bios", "web-uefi", "other"]
    assert names(only=["uefi"]) == ["web-uefi"]
    assert names(only=["web-bios", "other"]) == ["web-bios", "other"]
    assert names(except_=["bios"]) == ["web-uefi", "other"]
    assert names(only=["uefi", "bios"], except_=["web-bios"]) == ["web-uefi"]


def test_selection_errors_are_usage_errors_with_a_did_you_mean(tmp_path: Path):
    t = two(tmp_path)
    with pytest.raises(UsageError, match=r"no build named 'uefl' \(did you mean 'uefi'\?\)") as e:
        plan([t], load, only=["uefl"])
    assert e.value.exit_code == 2 and "bios, uefi, web-bios, web-uefi" in (e.value.hint or "")
    with pytest.raises(UsageError, match="no build named 'zzz'"):
        plan([t], load, except_=["zzz"])
    with pytest.raises(UsageError, match="left no build"):
        plan([t], load, except_=["bios", "uefi"])
    with pytest.raises(UsageError, match="both build 'web-bios'"):
        plan([t, t], load)


@pytest.mark.parametrize("argv, says", [
    (["build", "t.yaml", "-j", "0"], "must be at least 1"),
    (["build", "t.yaml", "--only", ","], "expected NAME[,NAME...]"),
    (["build", "t.yaml", "-only=uefx"], "no build named 'uefx' (did you mean 'uefi'?)"),
    (["build", "t.yaml", "-except=bios,uefi"], "left no build"),
    (["build", "t.yaml", "-o", "out"], "--output-dir names one build's output, but this run has 2 builds"),
    (["build", "t.yaml", "--with-children"], "--with-children works with a single build"),
    (["build", "t.yaml", "t.yaml"], "both build 'web-bios'"),
    (["build", "t.yaml", "-parallel-builds=2"], "use -j N"),
    (["deps", "t.yaml", "-o", "out"], "this template has several builds"),
    (["build", "t.yaml", "--log-file", "base.qcow2/x.log"], "cannot write --log-file"),
])
def test_argument_errors_exit_2_before_anything_starts(tmp_path: Path, monkeypatch, argv: list[str],
                                                       says: str):
    monkeypatch.chdir(tmp_path)
    two(tmp_path)
    code, _, err = run(*argv)
    assert code == 2 and says in err, err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["base.qcow2", "t.yaml"]  # nothing built or made


def test_packer_spellings_of_only_and_except_are_read():
    a = cli.parser().parse_args(["build", "a.yaml", "b.yaml", "-only=x,y", "--except", "z", "-j", "3",
                                 "--log-file", "run.log"])
    assert a.template == [Path("a.yaml"), Path("b.yaml")] and a.only == [["x", "y"]]
    assert a.except_ == [["z"]] and a.jobs == 3 and a.log_file == Path("run.log")


def test_validate_deps_and_inspect_know_builds(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    two(tmp_path)
    plain(tmp_path, "other")
    code, out, _ = run("validate", "t.yaml", "other.yaml")
    assert code == 0 and [line.split("(")[1].split(":")[0] for line in out.splitlines()] == \
        ["web-bios", "web-uefi", "other"]
    code, out, _ = run("validate", "t.yaml", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["web-bios", "web-uefi"]
    code, out, _ = run("deps", "t.yaml", "--only", "uefi")
    assert code == 0 and out.startswith("images/web-uefi/") and "web-bios" not in out
    code, out, _ = run("inspect", "t.yaml", "--json")
    views = json.loads(out)["builds"]
    assert code == 0 and [b["template"]["name"] for b in views] == ["web-bios", "web-uefi"]


# --- the summary and the exit code ---------------------------------------------------------------------

R_OK = Result("web-bios", "ok", 312.0, 734 * 1024 * 1024, 0)
R_BAD = Result("web-uefi", "failed", 95.5, 0, 1, "provision[1] shell (setup.sh)")


def test_the_summary_table_has_name_result_time_and_size():
    text = table([R_OK, R_BAD, Result("other", "skipped", 0.4, 1024, 0),
                  Result("late", "not started", 0.0, 0, 130)])
    lines = text.splitlines()
    assert lines[0].split() == ["BUILD", "RESULT", "TIME", "SIZE"]
    assert lines[1].split() == ["web-bios", "ok", "5m12s", "734.0", "MiB"]
    assert lines[2].startswith("web-uefi  FAILED (exit 1, provision[1] shell (setup.sh))")
    assert lines[2].split()[-2:] == ["1m35s", "-"]
    assert lines[3].split() == ["other", "skipped", "0.4s", "1.0", "KiB"]
    assert lines[4].split() == ["late", "not", "started", "-", "-"]
    assert lines[-1] == "2 of 4 builds succeeded; failed: web-uefi, late"
    assert len({len(line) for line in lines[:1]}) == 1 and "SIZE" in lines[0][-4:]


def test_the_exit_code_says_whether_any_failed():
    assert exit_code([R_OK, Result("x", "skipped", 0, 0, 0)]) == 0
    assert exit_code([R_OK, R_BAD]) == 1
    locked = Result("y", "failed", 0, 0, 75)
    assert exit_code([R_OK, locked]) == 75  # every failure agrees: its meaning is kept
    assert exit_code([R_BAD, locked]) == 1  # they differ: 1
    assert exit_code([R_OK, Result("z", "interrupted", 1, 0, 143)], signal.SIGTERM) == 143
    assert exit_code([R_OK], signal.SIGINT) == 130


# --- what the runner shows ------------------------------------------------------------------------------

def ev(kind: str, build: str, **fields) -> dict:
    return {"ts": "2026-01-31T12:00:00Z", "event": kind, "build": build, **fields}


FEED = [("a", ev("build_start", "a", name="a", template="/t.yaml", steps=["x"], output_dir="/o/a")),
        ("a", ev("step_start", "a", step="fetch-source", index=2, total=9)),
        ("b", ev("step_start", "b", step="wait-ssh", index=5, total=9)),
        ("a", ev("progress", "a", what="download", done=50 * 2**20, total=200 * 2**20, rate=10 * 2**20,
                 eta=15.0)),
        ("b", ev("log", "b", message="out: hello")),
        ("b", ev("build_failed", "b", step="wait-ssh", message="step 'wait-ssh' failed: timeout",
                 tails={"serial console (last lines)": "login:"}, logs=None, exit_code=1, debug=None))]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_lines_are_timestamped_prefixed_and_plain():
    stream, log = io.StringIO(), io.StringIO()
    out = PlainOut(["a", "b"], stream, log)
    for lane, record in FEED:
        out.event(lane, record)
    out.note("BUILD  RESULT\n1 of 2 builds succeeded")  # every line of a note is timestamped too
    text = stream.getvalue()
    assert not ESC.search(text) and not ESC.search(log.getvalue())
    lines = text.splitlines()
    assert lines[0] == "2026-01-31T12:00:00Z a: [2/9] fetch-source ..."
    assert "2026-01-31T12:00:00Z a: download: 50.0 MiB of 200.0 MiB (25%), 10.0 MiB/s, ETA 15.0s" in lines
    assert "2026-01-31T12:00:00Z b: out: hello" in lines
    assert "2026-01-31T12:00:00Z b: ERROR: build failed: step 'wait-ssh' failed: timeout" in lines
    assert "2026-01-31T12:00:00Z b:   login:" in lines  # every line of a multi-line message is prefixed
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ 1 of 2 builds succeeded", lines[-1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ BUILD  RESULT", lines[-2])
    logged = log.getvalue()
    assert logged.startswith("2026-01-31T12:00:00Z a: [2/9] fetch-source ...\n")
    assert "b: ERROR: build failed: step 'wait-ssh' failed: timeout" in logged and "b: out: hello" in logged


def test_json_passes_every_event_through_with_its_build():
    stream = io.StringIO()
    out = JsonOut(["a", "b"], stream)
    for lane, record in FEED:
        out.event(lane, {k: v for k, v in record.items() if k != "build"} if lane == "a" else record)
    out.note("not an event")
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["build"] for o in objs] == [lane for lane, _ in FEED]
    assert all(not event_problems(o) for o in objs)


def test_the_terminal_shows_one_live_line_per_build():
    stream, clock = io.StringIO(), Clock()
    out = TtyOut(["a", "b"], stream, clock=clock, columns=200)
    out.lanes["a"].state = out.lanes["b"].state = "running"
    out.lanes["a"].started = out.lanes["b"].started = clock.t
    for lane, record in FEED[:4]:
        out.event(lane, record)
    clock.t += 42
    out.tick()
    frame = stream.getvalue().rsplit("\x1b[J", 1)[1]  # the last redraw of the status block
    assert frame == ("\x1b[2Ka  [2/9] fetch-source 42.0s  download: 50.0 MiB of 200.0 MiB (25%), "
                     "10.0 MiB/s, ETA 15.0s\n\x1b[2Kb  [5/9] wait-ssh 42.0s\n")
    stream.truncate(0)
    stream.seek(0)
    out.event("b", FEED[4][1])  # a log line scrolls above the block, which is redrawn below it
    assert stream.getvalue().startswith("\x1b[2A\r\x1b[Jb: out: hello\n\x1b[2Ka  [2/9]")
    out.lanes["b"].state, out.lanes["b"].ended, out.lanes["b"].exit_code = "failed", clock.t, 1
    out.event("b", FEED[5][1])
    out.lanes["a"].state, out.lanes["a"].ended = "ok", clock.t + 10
    out.close()
    last = stream.getvalue().rsplit("\x1b[J", 1)[1]
    assert last == "\x1b[2Ka  done in 52.0s\n\x1b[2Kb  FAILED at wait-ssh after 42.0s (exit 1)\n"
    out.note("the summary")  # below the last frame, which stays as it is
    assert stream.getvalue().endswith("(exit 1)\nthe summary\n")


def test_long_status_lines_are_cut_to_the_terminal_width():
    stream = io.StringIO()
    out = TtyOut(["a"], stream, clock=Clock(), columns=20)
    out.lanes["a"].state = "running"
    out.event("a", ev("step_start", "a", step="provision[1] shell (a very long label)", index=1, total=2))
    out.tick()
    frame = stream.getvalue().rsplit("\x1b[J", 1)[1]
    assert frame == "\x1b[2K" + "a  [1/2] provision[" + "\n"


# --- the runner, with stand-in children -----------------------------------------------------------------

CHILD = r"""
import json, signal, sys, time
name, how = sys.argv[1], sys.argv[2]
def say(kind, **f):
    print(json.dumps({"ts": "2026-01-31T12:00:00Z", "event": kind, "build": name, **f}), flush=True)
def stopped(signum, _frame):
    say("build_failed", step="wait", message="interrupted", tails={}, logs=None, exit_code=128 + signum,
        debug=None)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stopped)
signal.signal(signal.SIGINT, stopped)
say("build_start", name=name, template="t", steps=["wait"], output_dir=sys.argv[3])
say("step_start", step="wait", index=1, total=1)
print("a note on stderr", file=sys.stderr, flush=True)
if how == "ok":
    import pathlib
    out = pathlib.Path(sys.argv[3])
    out.mkdir()
    (out / "x.qcow2").write_bytes(b"x" * 2048)
    say("step_done", step="wait", index=1, total=1, seconds=0.1)
    say("build_done", name=name, seconds=0.1, output_dir=sys.argv[3], artifacts=[])
elif how == "fail":
    say("build_failed", step="wait", message="step 'wait' failed: no", tails={}, logs=None, exit_code=1,
        debug=None)
    sys.exit(1)
elif how == "crash":
    sys.exit(9)
else:
    time.sleep(60)
"""


def runner(tmp: Path, hows: dict[str, str], **kw) -> tuple[Runner, io.StringIO]:
    planned = [Planned(tmp / f"{n}.yaml", None, type("T", (), {"name": n})()) for n in hows]  # type: ignore
    stream = io.StringIO()

    def argv(p: Planned, deps: Path | None) -> list[str]:
        return [sys.executable, "-c", CHILD, p.name, hows[p.name], str(tmp / "images" / p.name)]

    (tmp / "images").mkdir(exist_ok=True)
    jobs, mode = kw.pop("jobs", 2), kw.pop("mode", "plain")
    return Runner(planned, argv, jobs=jobs, mode=mode, stream=stream, **kw), stream


def test_one_failing_build_does_not_stop_the_others(tmp_path: Path):
    log = io.StringIO()
    r, stream = runner(tmp_path, {"good": "ok", "bad": "fail", "gone": "crash"}, log_file=log)
    code = r.run()
    assert code == 1
    res = {x.name: x for x in r.results.values()}
    assert (res["good"].result, res["good"].size) == ("ok", 2048)
    assert (res["bad"].result, res["bad"].step, res["bad"].exit_code) == ("failed", "wait", 1)
    assert (res["gone"].result, res["gone"].exit_code) == ("failed", 9)
    text = stream.getvalue()
    assert "good: stderr: a note on stderr" in text
    assert "gone: ERROR: build failed: baker build exited with code 9 without a report" in text
    assert "1 of 3 builds succeeded; failed: bad, gone" in text
    assert not ESC.search(text) and "bad: ERROR: build failed: step 'wait' failed: no" in log.getvalue()


def test_json_mode_keeps_stdout_events_only(tmp_path: Path, capsys):
    r, stream = runner(tmp_path, {"good": "ok", "gone": "crash"}, mode="json")
    assert r.run() == 9  # the only failure's own code
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(not event_problems(o) for o in objs) and {o["build"] for o in objs} == {"good", "gone"}
    assert [o["exit_code"] for o in objs if o["event"] == "build_failed"] == [9]
    assert "1 of 2 builds succeeded" in capsys.readouterr().err


def test_jobs_limits_how_many_run_at_once(tmp_path: Path):
    r, stream = runner(tmp_path, {"a": "ok", "b": "ok", "c": "ok"}, jobs=1)
    assert r.run() == 0
    starts = [line.split()[1] for line in stream.getvalue().splitlines() if "[1/1] wait ..." in line]
    dones = [line.split()[1] for line in stream.getvalue().splitlines() if "finished in" in line]
    assert starts == ["a:", "b:", "c:"] == dones  # one after the other, in order


def test_a_signal_reaches_every_build_and_the_run_exits_like_it(tmp_path: Path):
    r, stream = runner(tmp_path, {"x": "hang", "y": "hang", "z": "ok"}, jobs=2)

    def stop() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stream.getvalue().count("[1/1] wait ...") < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop, daemon=True).start()
    assert r.run() == 143
    res = {x.name: x.result for x in r.results.values()}
    assert res == {"x": "interrupted", "y": "interrupted", "z": "not started"}
    assert "0 of 3 builds succeeded" in stream.getvalue()


# --- the single build's reporter -----------------------------------------------------------------------

def test_every_event_carries_its_build_and_the_log_file_gets_plain_lines():
    stream, log = io.StringIO(), io.StringIO()
    r = Reporter("json", stream, build="web", log_file=log)
    r.event("step_start", step="a", index=1, total=2)
    with r.building("parent"):
        r.event("info", message="parent first")
    r.log_line("out: hi")
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["build"] for o in objs] == ["web", "parent", "web"]
    assert all(not event_problems(o) for o in objs)
    assert [line.split(" ", 1)[1] for line in log.getvalue().splitlines()] == \
        ["[1/2] a ...", "parent first", "out: hi"]


def test_progress_is_on_the_status_line_on_a_terminal_and_thinned_off_it():
    tty = io.StringIO()
    r = Reporter("tty", tty)
    r.event("step_start", step="fetch-source", index=2, total=9)
    r.event("progress", what="download", done=1024, total=4096, rate=512, eta=6.0)
    r._draw_status()
    r.close()
    assert re.search(r"\[2/9\] fetch-source \d+\.\ds  download: 1\.0 KiB of 4\.0 KiB \(25%\), 512 B/s, "
                     r"ETA 6\.0s", tty.getvalue())
    flat, log = io.StringIO(), io.StringIO()
    p = Reporter("plain", flat, log_file=log)
    for done in (1, 2, 3):
        p.event("progress", what="download", done=done, total=None, rate=1, eta=None)
    lines = flat.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("download: 1 B, 1 B/s") and not ESC.search(flat.getvalue())


def test_plain_output_and_the_log_file_carry_no_escape_codes_from_a_guest():
    colour = "\x1b[0;32m  OK  \x1b[0m] Reached target\x1b(B"
    flat, log = io.StringIO(), io.StringIO()
    r = Reporter("plain", flat, log_file=log)
    r.log_line(f"out: {colour}")
    r.event("error", message=colour)
    runner_out, runner_log = io.StringIO(), io.StringIO()
    PlainOut(["a"], runner_out, runner_log).event("a", ev("log", "a", message=colour))
    for text in (flat.getvalue(), log.getvalue(), runner_out.getvalue(), runner_log.getvalue()):
        assert not ESC.search(text) and "  OK  ] Reached target" in text


def test_events_doc_names_the_build_field():
    doc = (ROOT / "docs" / "events.md").read_text()
    assert "`build` (the name of the build" in doc and "| `progress` |" in doc
