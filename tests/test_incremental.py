"""Skip-when-unchanged, Make rules and output locks: the pure logic and the CLI paths that need no VM.

The real builds (make images twice, -j2, a changed script) are in tests/test_e2e_make.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from baker.errors import EXIT_LOCKED
from baker.incremental import OutputLocked, decide, fingerprint, make_rule, output_lock, restore
from baker.incremental.fingerprint import describe_changes
from baker.incremental.lock import lock_path
from baker.template import load_template
from tests.helpers.faults import write_template
from tests.helpers.paths import ROOT

BAKER = [sys.executable, "-m", "baker"]


def project(tmp: Path, *, checksum: str = "none", extra: str = "") -> Path:
    """A template folder: a base image, two scripts, an upload folder, a var-file."""
    (tmp / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 100)
    (tmp / "a.sh").write_text("echo a\n")
    (tmp / "b.sh").write_text("echo b\n")
    (tmp / "www").mkdir(exist_ok=True)
    (tmp / "www" / "index.html").write_text("<h1>hi</h1>\n")
    (tmp / "vars.yaml").write_text("greeting: hello\n")
    return write_template(tmp / "t.yaml", f"""\
name: t
version: "1.0.{{{{ timestamp() }}}}"  # a stamp: not an input
variables:
  greeting: {{default: hi}}
  token: {{default: hunter2-secret, sensitive: true}}
source:
  cloud_image: {{url: base.qcow2, checksum: '{checksum}'}}
provisioners:
  - {{type: shell, script: a.sh}}
  - {{type: shell, scripts: [b.sh], environment_vars: ["G={{{{ var.greeting }}}}"]}}
  - {{type: file, source: www/, destination: /var/www}}
exports: [{{type: qcow2}}]
{extra}""")


def load(path: Path, **kw):
    return load_template(path, environ={}, **kw)


def test_fingerprint_is_stable_and_ignores_the_version_stamp_and_comments(tmp_path: Path):
    t = project(tmp_path)
    first = fingerprint(load(t))
    time.sleep(1.1)  # timestamp() moves
    t.write_text(t.read_text().replace("name: t\n", "# a comment\nname: t   # trailing\n"))
    again = fingerprint(load(t))
    assert first.digest == again.digest and not first.unknown
    assert "variable token" in first.parts and "hunter2" not in json.dumps(first.to_dict())


def test_each_input_changes_its_own_part_only(tmp_path: Path):
    t = project(tmp_path)
    before = fingerprint(load(t))
    (tmp_path / "b.sh").write_text("echo b2\n")
    after = fingerprint(load(t))
    assert after.digest != before.digest
    assert describe_changes(before, after) == "script b.sh" or "b.sh" in describe_changes(before, after)
    assert [k for k in after.parts if after.parts[k] != before.parts[k]] == [
        next(k for k in after.parts if k.endswith("b.sh"))]


def test_touching_a_file_without_changing_it_is_no_change(tmp_path: Path):
    t = project(tmp_path)
    before = fingerprint(load(t))
    future = time.time() + 100
    for p in (tmp_path / "a.sh", tmp_path / "www" / "index.html", tmp_path / "base.qcow2"):
        os.utime(p, (future, future))
    assert fingerprint(load(t)).digest == before.digest


@pytest.mark.parametrize("change, label", [
    (lambda d: (d / "www" / "new.css").write_text("x"), "directory"),
    (lambda d: (d / "base.qcow2").write_bytes(b"QFI\xfb" + b"\1" * 100), "base image"),
])
def test_folders_and_a_local_base_count_by_content(tmp_path: Path, change, label: str):
    t = project(tmp_path)
    before = fingerprint(load(t))
    change(tmp_path)
    after = fingerprint(load(t))
    assert any(k.startswith(label) for k in after.parts if after.parts[k] != before.parts.get(k))


def test_variables_secrets_and_var_files(tmp_path: Path):
    t = project(tmp_path)
    base = fingerprint(load(t))
    assert fingerprint(load(t, cli_vars={"greeting": "hey"})).parts["variable greeting"] != \
        base.parts["variable greeting"]
    secret = fingerprint(load(t, cli_vars={"token": "other-secret"}))
    assert secret.parts["variable token"] != base.parts["variable token"]
    assert secret.parts["variable token"].startswith("hmac:")
    assert "other-secret" not in json.dumps(secret.parts)
    with_file = fingerprint(load(t, var_files=[tmp_path / "vars.yaml"]))
    assert any(k.startswith("var_file ") for k in with_file.parts)


def test_a_checksum_file_is_read_now_so_a_new_upstream_image_shows(tmp_path: Path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'a' * 64}  base.qcow2\n")
    t = project(tmp_path, checksum=f"file:{sums}")
    before = fingerprint(load(t))
    assert before.parts["base image"] == "sha256:" + "a" * 64
    sums.write_text(f"{'b' * 64}  base.qcow2\n")
    after = fingerprint(load(t))
    assert after.digest != before.digest and "base image" in describe_changes(before, after)


def test_a_remote_base_without_checksum_is_always_rebuilt(tmp_path: Path):
    t = write_template(tmp_path / "t.yaml", "name: t\nsource:\n  cloud_image: {url: 'https://example.invalid/x.qcow2'}\n")
    fp = fingerprint(load(t))
    assert fp.unknown and fp.digest.startswith("unknown:")
    d = decide(fp, tmp_path / "out", name="t")
    assert not d.up_to_date and "no checksum" in d.reason


def _fake_output(out: Path, fp, *, size: int = 5) -> None:
    """What a good build leaves (manifest with inputs, its artifact) — written here, not built."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "t.qcow2").write_bytes(b"x" * size)
    (out / "manifest.json").write_text(json.dumps({
        "name": "t", "built_at": "2026-12-01T00:00:00Z", "inputs": fp.to_dict(),
        "artifacts": [{"export": "qcow2", "file": "t.qcow2", "size": size}]}))


def test_decide_compares_with_the_last_good_build_of_the_output(tmp_path: Path):
    t = project(tmp_path)
    fp = fingerprint(load(t))
    out = tmp_path / "out"
    assert "no earlier build" in decide(fp, out, name="t").reason
    _fake_output(out, fp)
    assert decide(fp, out, name="t").up_to_date
    (tmp_path / "a.sh").write_text("echo changed\n")
    d = decide(fingerprint(load(t)), out, name="t")
    assert not d.up_to_date and "a.sh" in d.reason and any("a.sh" in c for c in d.changed)
    (out / "t.qcow2").unlink()
    d = decide(fp, out, name="t")
    assert not d.up_to_date and "t.qcow2 is missing" in d.reason


def test_decide_falls_back_to_the_stores_latest_version(tmp_path: Path):
    from baker.store import Store

    t = project(tmp_path)
    fp = fingerprint(load(t))
    store = tmp_path / "store"
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"disk")
    s = Store(store)
    try:
        s.record("t", "1.0", [(disk, "t.qcow2", "artifact")], {"name": "t", "inputs": fp.to_dict()})
    finally:
        s.close()
    out = tmp_path / "no-such-out"
    d = decide(fp, out, name="t", store=store)
    assert d.up_to_date and "t@1.0" in d.reason and d.restore == "t@1.0"
    restore(d, out, store)  # Make's targets are the output's files: the stored version is put back
    assert (out / "t.qcow2").read_bytes() == b"disk"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".no-such-out")] == []
    (out / "t.qcow2").unlink()
    (out / "stray").write_text("x")
    d = decide(fp, out, name="t", store=store)  # a folder that is not an image is rebuilt, never merged into
    assert not d.up_to_date and "holds no manifest.json" in d.reason


# --- Make rules ---------------------------------------------------------------------------------

def test_make_rule_names_the_artifacts_and_every_local_input(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = load(project(tmp_path))
    rule = make_rule(t, tmp_path / "images" / "t")
    head, _, rest = rule.partition(": ")
    assert head.split() == ["images/t/t.qcow2", "images/t/manifest.json"]
    prereqs = rest.split("\n\n")[0].replace("\\\n", " ").split()
    assert prereqs == ["t.yaml", "a.sh", "b.sh", "www", "www/index.html", "base.qcow2"]
    assert "\na.sh:\n" in rule  # -MP: a deleted input breaks no make run


def test_make_rule_escapes_spaces_and_dollars_and_skips_version_named_files(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "my dir"
    d.mkdir()
    t = project(d)
    (d / "c$.sh").write_text("x")
    t.write_text(t.read_text().replace("exports: [{type: qcow2}]",
                                       "exports: [{type: qcow2}, {type: vagrant, provider: libvirt}]")
                 .replace("  - {type: file,", "  - {type: shell, script: c$.sh}\n  - {type: file,"))
    rule = make_rule(load(t), tmp_path / "images" / "t")
    assert "my\\ dir/c$$.sh" in rule
    assert "-libvirt.box" not in rule.partition(":")[0]  # its name carries the timestamped version


def test_make_uses_the_rule_to_rebuild_only_what_changed(tmp_path: Path):
    """Real GNU make with two templates' rules: touching one's script makes only that one stale."""
    for name in ("one", "two"):
        d = tmp_path / name
        d.mkdir()
        t = project(d)
        t.write_text(t.read_text().replace("name: t", f"name: {name}"))
        rule = subprocess.run([*BAKER, "deps", str(t), "-o", f"images/{name}"], cwd=tmp_path, check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        (tmp_path / f"{name}.d").write_text(rule.stdout)
    (tmp_path / "Makefile").write_text(
        "all: images/one/manifest.json images/two/manifest.json\n"
        "images/%/manifest.json:\n\tmkdir -p $(@D) && echo built $* && touch $@\n"
        "-include one.d two.d\n")
    first = subprocess.run(["make"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "built one" in first and "built two" in first
    second = subprocess.run(["make"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "Nothing to be done" in second
    time.sleep(1.1)
    (tmp_path / "two" / "a.sh").write_text("echo changed\n")
    again = subprocess.run(["make"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "built two" in again and "built one" not in again
    (tmp_path / "one" / "b.sh").unlink()  # -MP rules: a deleted input is a rebuild, not an error
    gone = subprocess.run(["make"], cwd=tmp_path, capture_output=True, text=True)
    assert gone.returncode == 0 and "built one" in gone.stdout


def _fake_baker(tmp: Path) -> Path:
    """`deps` is the real baker; `build` only logs its arguments and writes the -o dir's manifest."""
    fake = tmp / "fake-baker"
    fake.write_text(f"""#!{sys.executable}
import subprocess, sys
from pathlib import Path
argv = sys.argv[1:]
if argv[0] == "deps":
    sys.exit(subprocess.run([{sys.executable!r}, "-m", "baker", *argv]).returncode)
with open({str(tmp / "builds.log")!r}, "a") as log:
    log.write(" ".join(argv) + "\\n")
out = Path(argv[argv.index("-o") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "manifest.json").write_text("{{}}")
""")
    fake.chmod(0o755)
    return fake


def test_make_images_builds_each_named_build_of_a_template_with_only(tmp_path: Path):
    """The repository's Makefile with real GNU make (and a stand-in for `baker build`): a template with
    `builds:` is one target per build, built with --only into images/<name>-<build>; a plain one
    beside it keeps its one target; a second run does nothing; a script rebuilds only its users."""
    tdir, images, venv = tmp_path / "templates", tmp_path / "images", tmp_path / "venv"
    tdir.mkdir()
    venv.mkdir()
    (venv / ".done").touch()  # the Makefile's setup prerequisite, already satisfied
    project(tdir)
    (tdir / "t.yaml").rename(tdir / "plain.yaml")
    (tdir / "vars.yaml").unlink()  # not a template
    (tdir / "web.sh").write_text("echo web\n")
    write_template(tdir / "web.yaml", """\
name: web
source: {cloud_image: {url: base.qcow2, checksum: none}}
provisioners: [{type: shell, script: web.sh}]
builds: [{name: bios}, {name: uefi, machine: {firmware: uefi}}]
""")
    log = tmp_path / "builds.log"

    def make(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        before = log.read_text().splitlines() if log.exists() else []
        r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args, f"TEMPLATE_DIR={tdir}",
                            f"IMAGES_DIR={images}", f"BAKER={_fake_baker(tmp_path)}", f"VENV={venv}"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r, (log.read_text().splitlines() if log.exists() else [])[len(before):]

    _, built = make("-j2", "images")
    assert sorted(b.split(" -o ")[1].split()[0] for b in built) == \
        [str(images / n) for n in ("plain", "web-bios", "web-uefi")]
    only = {b.split("--only ")[1].split()[0]: b for b in built if "--only" in b}
    assert set(only) == {"bios", "uefi"}
    assert only["uefi"].endswith(f"-o {images / 'web-uefi'} {tdir / 'web.yaml'}")
    assert f"--deps-file {images / 'web-uefi'}.d" in only["uefi"]
    mk = (images / "web.mk").read_text()
    assert "IMAGE_BUILD_ONLY := bios" in mk and "web.sh" in mk
    assert (images / "plain.mk").read_text().count("\n") == 2  # a plain template: not loaded, no targets
    r, built = make("images")
    assert built == [] and "deps" not in r.stdout, r.stdout  # nothing changed: nothing runs, not even deps
    time.sleep(1.1)
    (tdir / "web.sh").write_text("echo web v2\n")
    _, built = make("images")
    assert sorted(b.split("--only ")[1].split()[0] for b in built) == ["bios", "uefi"]
    time.sleep(1.1)  # a new build in the template: its fragment is remade and the new build runs
    (tdir / "web.yaml").write_text((tdir / "web.yaml").read_text().replace("{name: bios}",
                                                                           "{name: bios}, {name: efi2}"))
    _, built = make("images")
    assert any("--only efi2" in b for b in built), built


def test_deps_makefile_refuses_o_and_writes_nothing_for_a_template_that_does_not_load(tmp_path: Path):
    text = project(tmp_path).read_text().replace("name: t", "name: web")
    text += "builds: [{name: bios}, {name: uefi, machine: {firmwre: uefi}}]\n"
    web = write_template(tmp_path / "web.yaml", text)

    def deps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BAKER, "deps", str(web), "--makefile", "web.mk", *args], cwd=tmp_path,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    r = deps("-o", "out")
    assert r.returncode == 2 and "--makefile puts each build in --images-dir" in r.stderr, r.stderr
    r = deps()
    assert r.returncode == 2 and "web.yaml:13:47: machine.firmwre: unknown key" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "web.mk").exists()  # Make then builds it by the plain rule, which fails loudly


# --- locks --------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from pathlib import Path
from baker.incremental import output_lock
with output_lock(Path(sys.argv[1]), template="holder.yaml"):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(out: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_second_build_of_the_same_output_fails_fast_naming_the_holder(tmp_path: Path):
    out = tmp_path / "images" / "t"
    holder = _hold(out)
    try:
        started = time.monotonic()
        with pytest.raises(OutputLocked) as e, output_lock(out, template="t.yaml"):
            pass
        assert time.monotonic() - started < 1
        assert e.value.exit_code == EXIT_LOCKED and f"pid {holder.pid}" in str(e.value)
        assert "holder.yaml" in str(e.value) and "--wait-lock" in str(e.value)
        with output_lock(tmp_path / "images" / "other", template="o.yaml"):
            pass  # a different output is not blocked
    finally:
        holder.kill()
        holder.wait()


def test_wait_lock_queues_and_a_killed_holders_lock_is_taken_over(tmp_path: Path):
    out = tmp_path / "images" / "t"
    holder = _hold(out)
    notices: list[tuple[str, str]] = []
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
    started = time.monotonic()
    with output_lock(out, template="t.yaml", wait=True, notice=lambda k, m: notices.append((k, m))):
        waited = time.monotonic() - started
    holder.wait()
    assert waited >= 0.9
    kinds = [k for k, _ in notices]
    assert kinds[0] == "info" and "waiting for" in notices[0][1]
    assert "warning" in kinds and any("died without releasing" in m for _, m in notices)


def test_cli_build_on_a_locked_output_exits_75_and_touches_nothing(tmp_path: Path):
    t = project(tmp_path)
    out = tmp_path / "images" / "t"
    holder = _hold(out)
    try:
        r = subprocess.run([*BAKER, "build", str(t), "-o", str(out), "--json", "--no-store"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           timeout=60)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert r.returncode == EXIT_LOCKED, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["event"] == "build_failed" and events[-1]["step"] == "lock"
    assert not out.exists() and not list((tmp_path / "images").glob(".t.staging-*"))


def test_cli_if_changed_skips_in_well_under_two_seconds_and_says_so(tmp_path: Path):
    t = project(tmp_path)
    out = tmp_path / "images" / "t"
    _fake_output(out, fingerprint(load(t)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    r = subprocess.run([*BAKER, "build", str(t), "-o", str(out), "--if-changed", "--no-store",
                        "--deps-file", str(tmp_path / "t.d")], capture_output=True, text=True, env=env,
                       timeout=60)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout and "2026-12-01T00:00:00Z" in r.stdout
    assert "t.qcow2" in (tmp_path / "t.d").read_text().partition(":")[0]
    print(f"no-change --if-changed run: {took:.2f}s")
    j = subprocess.run([*BAKER, "build", str(t), "-o", str(out), "--if-changed", "--no-store", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    events = [json.loads(line) for line in j.stdout.splitlines()]
    assert [e["event"] for e in events] == ["build_skipped"] and events[0]["name"] == "t"


def test_a_released_lock_leaves_nothing_beside_the_output_and_readers_share(tmp_path: Path):
    out = tmp_path / "images" / "t"
    with output_lock(out, template="t.yaml"):
        assert lock_path(out).exists()
    assert list((tmp_path / "images").iterdir()) == []
    with output_lock(out, template="a.yaml", shared=True), output_lock(out, template="b.yaml", shared=True), \
            pytest.raises(OutputLocked), output_lock(out, template="w.yaml"):
        pass
    assert list((tmp_path / "images").iterdir()) == []


def test_a_waiter_takes_over_after_the_holder_unlinked_the_file_and_a_third_build_is_refused(tmp_path: Path):
    out = tmp_path / "images" / "t"
    released = threading.Event()

    def holder() -> None:
        with output_lock(out, template="first.yaml"):
            released.wait(5)
    t = threading.Thread(target=holder)
    t.start()
    while not lock_path(out).exists():
        time.sleep(0.01)
    threading.Timer(0.7, released.set).start()  # the waiter has opened the old file by then
    with output_lock(out, template="second.yaml", wait=True):
        locked = lock_path(out).stat().st_ino
        with pytest.raises(OutputLocked), output_lock(out, template="third.yaml"):
            pass  # the path names the very file the waiter locked, so a third build is refused
        assert lock_path(out).stat().st_ino == locked
    t.join()
    assert not lock_path(out).exists()
