"""The command line has no sharp edges: Packer's spellings, no prefix guessing, no traceback, exit codes."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baker import cli
from baker.errors import EXIT_TIMEOUT, TimedOut
from baker.events import EVENTS, event_problems
from tests.helpers.cli import run_main as run
from tests.helpers.faults import build, write_template
from tests.helpers.paths import ROOT


def template(tmp: Path, body: str = "", *, base: str | None = None, checksum: str | None = "none") -> Path:
    if base is None:
        (tmp / "base.qcow2").write_bytes(b"")
        base = "base.qcow2"
        # a relative base resolves against the template's folder
    pin = "" if checksum is None else f", checksum: '{checksum}'"
    return write_template(tmp / "t.yaml", f"name: t\nsource:\n  cloud_image: {{url: '{base}'{pin}}}\n{body}")


# --- Packer's single-dash flags and argparse's guessing -------------------------------------------

@pytest.mark.parametrize("flag, says", [
    ("-debug", "--on-error=abort"),
    ("-machine-readable", "--json"), ("-parallel-builds=2", "use -j N"),
])
def test_packer_flags_baker_lacks_are_refused_naming_what_baker_does(tmp_path: Path, monkeypatch, flag: str,
                                                                      says: str):
    monkeypatch.chdir(tmp_path)
    code, _, err = run("build", str(template(tmp_path)), flag)
    assert code == 2 and "Packer's" in err and says in err
    assert list(tmp_path.iterdir()) == [tmp_path / "base.qcow2", tmp_path / "t.yaml"]  # no "nly=qemu.x" dir


def test_packer_spellings_baker_has_are_accepted():
    a = cli.parser().parse_args(["build", "T", "-var", "a=1", "-var-file=v.yaml", "-on-error=abort",
                                 "-force"])
    assert a.force
    assert a.vars == [("a", "1")] and a.var_files == [Path("v.yaml")] and a.on_error == "abort"
    a = cli.parser().parse_args(["build", "T", "-var-file", "v.yaml", "-o/tmp/out", "--on-error", "cleanup"])
    assert a.output_dir == Path("/tmp/out") and a.on_error == "cleanup"


def test_packer_on_error_values_baker_lacks_are_usage_errors():
    code, _, err = run("build", "T", "-on-error=ask")
    assert code == 2 and "invalid choice: 'ask'" in err


@pytest.mark.parametrize("argv, says", [
    (["build", "T", "--out", "x"], "unknown option --out (did you mean --output-dir?)"),
    (["build", "T", "--js"], "unknown option --js (did you mean --json?)"),
    (["build", "T", "-json"], "unknown option -json (did you mean --json?)"),
    (["build", "T", "-oimages"], "-oimages would be read as -o 'images'"),
    (["validate", "T", "--stric"], "did you mean --strict?"),
    (["cache", "prune", "--older", "3d"], "did you mean --older-than?"),
    (["-version"], "did you mean --version?"),
])
def test_no_prefix_matching_and_a_did_you_mean(argv: list[str], says: str):
    code, _, err = run(*argv)
    assert code == 2 and says in err


def test_values_after_double_dash_are_not_options():
    a = cli.parser().parse_args(["validate", "--", "-only.yaml"])
    assert a.template == [Path("-only.yaml")]


# --- values: a clean message and exit 2, never a traceback ----------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["cache", "prune", "--older-than", "xd"], "'xd' is not a duration"),
    (["cache", "prune", "--older-than", "nand"], "'nand' is not a duration"),
    (["cache", "prune", "--max-size", "lots"], "'lots' is not a size"),
    (["cache", "prune", "--keep", "-1"], "must be at least 0"),
    (["cache", "prune", "--keep", "two"], "'two' is not a whole number"),
    (["build", "T", "--timeout", "abc"], "'abc' is not a duration"),
    (["build", "T", "--timeout", "0s"], "must be longer than zero"),
    (["build", "T", "--timeout", "99999999h"], "more than a year"),
    (["build", "T", "--export-jobs", "0"], "must be at least 1"),
    (["validate", "T", "-var", "=x"], "the name is empty"),
    (["validate", "T", "-var", "novalue"], "expected NAME=VALUE"),
])
def test_bad_values_are_usage_errors(argv: list[str], says: str):
    code, _, err = run(*argv)
    assert code == 2 and says in err and "Traceback" not in err


def test_prune_ages_in_days_hours_and_fractions(tmp_path: Path):
    for age in ("30d", "1.5d", "720h", "0d"):
        code, out, err = run("cache", "prune", "--older-than", age, "--max-size", "10G", "--keep", "3")
        assert code == 0, err
        assert "0 files removed" in out


def test_a_traceback_free_process_for_a_bad_value(tmp_path: Path):
    from tests.test_cli import baker

    r = baker("cache", "prune", "--older-than", "xd")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a duration" in r.stderr


# --- validate: URLs, local files, checksums, --json, --strict --------------------------------------

@pytest.mark.parametrize("url, says", [
    ("htp://example.com/x.qcow2", "unknown URL scheme 'htp://' (did you mean 'http'?)"),
    ("ftp://example.com/x.qcow2", "unknown URL scheme 'ftp://'"),
    ("https:///x.qcow2", "has no host name"),
    ("file://server/x.qcow2", "names host 'server'"),
    ("absent.qcow2", "the base image does not exist"),
    ("file:///nonexistent/x.qcow2", "the base image does not exist: /nonexistent/x.qcow2"),
    (".", "is a directory"),
])
def test_validate_checks_the_base_location(tmp_path: Path, url: str, says: str):
    code, _, err = run("validate", str(template(tmp_path, base=url)))
    assert code == 2 and says in err and "source.cloud_image.url" in err and ":3:" in err


def test_iso_mirrors_and_checksum_files_are_checked_too(tmp_path: Path):
    t = write_template(tmp_path / "t.yaml", "name: t\nsource:\n  iso:\n"
                       "    iso_urls: [https://a.example/x.iso, htps://b.example/x.iso]\n"
                       "    iso_checksum: file:SHA256SUMS\n")
    code, _, err = run("validate", str(t))
    assert code == 2
    assert "source.iso.iso_urls[1]" in err and "did you mean 'https'" in err
    assert "source.iso.iso_checksum" in err and "the checksum file does not exist" in err
    (tmp_path / "SHA256SUMS").write_text("")
    t.write_text(t.read_text().replace("htps", "https"))
    assert run("validate", str(t))[0] == 0


def test_kernel_and_private_key_files_must_exist(tmp_path: Path):
    t = template(tmp_path, "  kernel: vmlinuz\ncommunicator: {ssh_private_key_file: id_test}\n")
    code, _, err = run("validate", str(t))
    assert code == 2 and "source.kernel" in err and "communicator.ssh_private_key_file" in err


def test_a_missing_checksum_warns_loudly_and_strict_makes_it_an_error(tmp_path: Path):
    t = template(tmp_path, checksum=None)
    code, out, err = run("validate", str(t))
    assert code == 0 and "1 warning" in out
    assert "WARNING:" in err and "source.cloud_image.checksum" in err and "no checksum" in err
    assert f"{t}:3:" in err
    code, _, err = run("validate", "--strict", str(t))
    assert code == 2 and "no checksum" in err
    # an explicit `none` (or Packer's iso_checksum spelling) is a decision, not an omission
    for pin in ("checksum: none", "iso_checksum: none"):
        t.write_text(f"name: t\nsource:\n  cloud_image: {{url: base.qcow2, {pin}}}\n")
        code, _, err = run("validate", "--strict", str(t))
        assert code == 0 and "WARNING" not in err, err


def test_validate_json_reports_errors_and_warnings_with_positions(tmp_path: Path):
    t = template(tmp_path, checksum=None)
    code, out, _ = run("validate", "--json", str(t))
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["name"] == "t" and report["exports"] == ["qcow2"]
    [w] = report["warnings"]
    assert w["path"] == "source.cloud_image.checksum" and w["line"] == 3 and w["hint"]
    t.write_text("name: t\nsource: {cloud_image: {url: 'htp://x/y', checksum: none}}\nmachine: {cpuss: 2}\n")
    code, out, _ = run("validate", "--json", str(t))
    report = json.loads(out)
    assert code == 2 and not report["ok"]
    assert [(e["line"], e["path"]) for e in report["errors"]] == [(2, "source.cloud_image.url"),
                                                                  (3, "machine.cpuss")]
    code, out, _ = run("validate", "--json", str(tmp_path / "absent.yaml"))
    assert code == 2 and "file not found" in json.loads(out)["errors"][0]["message"]


# --- --timeout has its own exit code ---------------------------------------------------------------

def test_timed_out_is_an_interruption_with_exit_124():
    e = TimedOut(5, "fetch-source")
    assert e.exit_code == EXIT_TIMEOUT == 124
    assert "timed out after 5s (--timeout) during step 'fetch-source'" in str(e)


def test_timeout_stops_a_build_with_124_not_sigterms_143(tmp_path: Path):
    """A download that hangs (no QEMU involved): --timeout 3s ends it, cleaned up, with exit 124."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts and never answers
    port = listener.getsockname()[1]
    try:
        t = template(tmp_path, base=f"http://127.0.0.1:{port}/hang.qcow2")
        started = time.monotonic()
        r = build(t, tmp_path / "out", "--timeout", "3s", env={"BAKER_DOWNLOAD_TIMEOUT": "120"}, timeout=120)
    finally:
        listener.close()
    assert r.rc == 124, r.stderr
    assert time.monotonic() - started < 60
    assert r.failure["exit_code"] == 124 and "timed out after 3s" in r.failure["message"]
    assert r.failure["step"] == "fetch-source"
    assert not (tmp_path / "out").exists()
    assert all(not event_problems(e) for e in r.events), [event_problems(e) for e in r.events]


# --- the event schema and its documentation --------------------------------------------------------

def test_docs_list_every_event_kind_and_field():
    doc = (ROOT / "docs" / "events.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*?) \|", doc, re.M))
    assert set(rows) == set(EVENTS)
    for kind, fields in EVENTS.items():
        for name in fields:
            assert f"`{name}`" in rows[kind], (kind, name)


def test_event_problems_catches_drift():
    good = {"ts": "2026-01-31T12:00:00Z", "event": "step_start", "build": "b", "step": "x", "index": 1,
            "total": 2}
    assert event_problems(good) == []
    unnamed = {k: v for k, v in good.items() if k != "build"}
    assert event_problems(unnamed) == ["step_start: missing field 'build'"]
    assert event_problems({**good, "index": "1"}) == ["step_start: field 'index' has type str"]
    assert event_problems({**good, "index": True}) == ["step_start: field 'index' has type bool"]
    bad_ts = {"ts": "now", "event": "log", "build": "b", "message": "m"}
    assert event_problems(bad_ts)[0].startswith("log: ts")
    assert event_problems({"event": "nope"}) == ["unknown event kind 'nope'"]


# --- fuzz: no argument list ends in a traceback ---------------------------------------------------

_TOKENS = ["build", "validate", "inspect", "cache", "list", "prune", "import", "--json", "--plain", "-v",
           "--strict", "--timeout", "--older-than", "--keep", "--max-size", "--export-jobs", "-o",
           "--output-dir", "-var", "-var-file", "--on-error", "-on-error=abort", "-only=qemu.x", "-force",
           "--", "-", "-1", "0", "30d", "xd", "lots", "1e999", "nan", "a=b", "=", "T.yaml", "bad.yaml",
           "vars.yaml", "packer.json", "dir", "--help", "-h", "--version", "-oout", "--out", "\x00", "é"]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("argv-fuzz")
    # templates that never get as far as a build: a missing base image, and a broken file
    write_template(d / "T.yaml", "name: t\nsource: {cloud_image: {url: absent.qcow2, checksum: none}}\n")
    write_template(d / "bad.yaml", "name: [\n")
    write_template(d / "vars.yaml", "x: 1\n")
    write_template(d / "packer.json", '{"builders": [{"type": "qemu", "iso_url": "absent.iso"}]}\n')
    (d / "dir").mkdir()
    return d


_WORD = st.one_of(st.sampled_from(_TOKENS), st.text(max_size=6))
_COMMANDS = st.sampled_from([["build"], ["validate"], ["inspect"], ["cache", "prune"], ["cache", "list"],
                             ["import"], ["fmt", "--check"]])
_FILES = st.sampled_from(["T.yaml", "bad.yaml", "vars.yaml", "packer.json", "dir", "absent"])
# mostly well-formed command lines (so values and files get parsed), some free-form ones
_ARGV = st.one_of(
    st.lists(_WORD, max_size=7),
    st.tuples(_COMMANDS, _FILES, st.lists(_WORD, max_size=5)).map(lambda t: [*t[0], t[1], *t[2]]),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=_ARGV)
def test_random_argument_lists_never_raise(argv: list[str], fuzz_dir: Path, monkeypatch) -> None:
    assume("doctor" not in argv)  # it probes KVM with a real guest: not for a fuzz loop
    monkeypatch.chdir(fuzz_dir)
    code, _, err = run(*argv)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
