"""Pure logic under everything: sizes, durations, atomic writes, ISO images, masking, publishing."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from baker.errors import CommandError
from baker.fsutil import atomic_path, atomic_write, private_dir
from baker.iso9660 import read_iso, write_iso
from baker.output import Failure, Reporter, setup_logging, teardown_logging
from baker.proc import run
from baker.secrets import MASKER
from baker.steps.record import _exchange
from baker.units import parse_duration, parse_size


@pytest.mark.parametrize("text,expected", [
    ("8G", 8 * 1024**3), ("512M", 512 * 1024**2), ("10GiB", 10 * 1024**3), ("1.5g", int(1.5 * 1024**3)),
    ("4096", 4096), (1024, 1024), ("2T", 2 * 1024**4), ("100k", 102400),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "G8", "8Q", "-1", "eight", True])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,expected", [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), ("1m20s", 80), ("15", 15), (3, 3.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "10x", "m10", "1h 2q", "ten minutes"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_atomic_path_leaves_nothing_on_failure_and_keeps_previous(tmp_path: Path):
    dest = tmp_path / "image.qcow2"
    dest.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert dest.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.qcow2"]


def test_atomic_write_replaces(tmp_path: Path):
    atomic_write(tmp_path / "a", "one")
    atomic_write(tmp_path / "a", b"two", mode=0o600)
    assert (tmp_path / "a").read_text() == "two"
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600


def test_private_dir_is_0700(tmp_path: Path):
    d = private_dir(tmp_path)
    assert d.stat().st_mode & 0o777 == 0o700


def test_iso_round_trip_with_long_names_and_label(tmp_path: Path):
    files = {"user-data": "#cloud-config\n", "meta-data": b"instance-id: x\n",
             "deep/dir/a-very-long-file.name.txt": "x" * 5000}
    iso = write_iso(tmp_path / "seed.iso", files, label="cidata")
    assert read_iso(iso) == {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    assert b"CIDATA" in iso.read_bytes()[0x8000:0x8800].upper()


def test_masker_masks_text_and_nested_objects():
    MASKER.add("hunter2-secret")
    try:
        assert MASKER.mask("pw=hunter2-secret;") == "pw=<sensitive>;"
        assert MASKER.mask_obj({"a": ["x hunter2-secret"], "b": 1}) == {"a": ["x <sensitive>"], "b": 1}
    finally:
        MASKER.clear()


def test_secret_never_reaches_log_handlers(tmp_path: Path):
    MASKER.add("topsecret-value")
    stream = io.StringIO()
    reporter = Reporter("json", stream)
    handlers = setup_logging(reporter, tmp_path / "build.log")
    try:
        logging.getLogger("baker.test").info("using %s now", "topsecret-value")
    finally:
        teardown_logging(handlers)
        MASKER.clear()
    assert "topsecret-value" not in stream.getvalue()
    assert "topsecret-value" not in (tmp_path / "build.log").read_text()
    assert "<sensitive>" in stream.getvalue()


def test_reporter_plain_lines_are_timestamped():
    stream = io.StringIO()
    r = Reporter("plain", stream)
    r.event("step_start", step="wait-ssh", index=3, total=9)
    r.event("step_done", step="wait-ssh", index=3, total=9, seconds=41.5)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("[3/9] wait-ssh ...") and lines[0][:4].isdigit() and "T" in lines[0][:20]
    assert "done in 41.5s" in lines[1]


def test_reporter_json_is_one_object_per_line():
    stream = io.StringIO()
    r = Reporter("json", stream)
    r.event("step_start", step="a", index=1, total=2)
    r.event("warning", message="KVM is not usable")
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["event"] for o in objs] == ["step_start", "warning"] and all("ts" in o for o in objs)


def test_failure_has_one_formatter_per_output_mode():
    f = Failure(step="wait-ssh", message="step 'wait-ssh' failed: timeout", tails={"serial": "a\nb"},
                logs="/logs/x", exit_code=1,
                debug={"ssh": "ssh -p 2222 baker@127.0.0.1", "serial_log": "/w/serial.log", "work_dir": "/w"})
    stream = io.StringIO()
    Reporter("json", stream).failure(f)
    [obj] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert obj["event"] == "build_failed"
    assert {k: obj[k] for k in ("step", "message", "tails", "logs", "exit_code", "debug")} == {
        "step": "wait-ssh", "message": f.message, "tails": f.tails, "logs": "/logs/x", "exit_code": 1,
        "debug": f.debug}
    for mode in ("plain", "tty"):
        stream = io.StringIO()
        r = Reporter(mode, stream)
        r.failure(f)
        r.close()
        text = stream.getvalue()
        assert "ERROR: build failed: step 'wait-ssh' failed: timeout" in text
        assert "--- serial ---" in text and "  a" in text and "  b" in text
        assert "logs kept in /logs/x" in text and "  ssh -p 2222 baker@127.0.0.1" in text
        assert "serial console: /w/serial.log   work dir: /w" in text


def test_run_raises_with_stderr_tail():
    with pytest.raises(CommandError) as ei:
        run(["sh", "-c", "echo out; echo 'the reason' >&2; exit 3"])
    assert ei.value.returncode == 3 and "the reason" in str(ei.value)


def test_publish_exchange_swaps_directories(tmp_path: Path):
    old, new = tmp_path / "out", tmp_path / "staging"
    old.mkdir()
    new.mkdir()
    (old / "v1").write_text("1")
    (new / "v2").write_text("2")
    _exchange(new, old)
    assert os.listdir(old) == ["v2"] and os.listdir(new) == ["v1"]
