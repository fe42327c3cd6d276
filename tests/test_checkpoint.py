"""Checkpoints without a VM: the key chain, the cache (qcow2 layers made with qemu-img), prune, locks,
and the step that picks where a build resumes. The real build and resume are in
tests/test_e2e_checkpoint.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from baker.checkpoint import CheckpointCache, Layer, chain
from baker.checkpoint.cache import Pins
from baker.checkpoint.session import save, session_path
from baker.checkpoint.steps import PrepareCheckpoints, SaveCheckpoint, WaitAfterResume
from baker.fsutil import file_digest
from baker.incremental import fingerprint
from baker.keys import generate_build_keys
from baker.state import BuildOptions, BuildState
from baker.steps import plan_steps
from baker.steps.provision import Provision
from baker.template import load_template
from tests.helpers.faults import write_template

DAY = 86400.0


def project(tmp: Path, *, third: str = "echo three", machine: str = "{memory: 768}",
            extra: str = "") -> Path:
    if not (tmp / "base.qcow2").exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "base.qcow2"), "64M"],
                       check=True)
    for name in ("a.sh", "b.sh"):
        if not (tmp / name).exists():
            (tmp / name).write_text(f"echo {name}\n")
    return write_template(tmp / "t.yaml", f"""\
name: ck
version: "1.0.{{{{ timestamp() }}}}"
checkpoints: true
variables:
  token: {{default: hunter2-secret, sensitive: true}}
source:
  cloud_image: {{url: base.qcow2, checksum: none}}
machine: {machine}
provisioners:
  - {{type: shell, script: a.sh}}
  - {{type: shell, scripts: [b.sh]}}
  - {{type: shell, inline: ["{third}"]}}
exports: [{{type: qcow2}}]
{extra}""")


def keys_of(path: Path, base_sha: str = "0" * 64) -> list[str]:
    t = load_template(path, environ={})
    return chain(t, fingerprint(t), base_sha, []).keys


# -- the key chain ------------------------------------------------------------------------------

def test_changing_provisioner_k_invalidates_k_and_later_only(tmp_path: Path):
    before = keys_of(project(tmp_path))
    assert len(before) == 4 and len(set(before)) == 4
    assert keys_of(project(tmp_path)) == before  # stable
    after = keys_of(project(tmp_path, third="echo THREE"))
    assert after[:3] == before[:3] and after[3] != before[3]
    (tmp_path / "b.sh").write_text("echo b changed\n")  # provisioner 2's script: its input digest
    changed = keys_of(project(tmp_path, third="echo THREE"))
    assert changed[:2] == after[:2] and changed[2] != after[2] and changed[3] != after[3]


def test_the_base_and_the_machine_invalidate_everything_exports_and_ttl_nothing(tmp_path: Path):
    before = keys_of(project(tmp_path))
    other_base = keys_of(project(tmp_path), base_sha="1" * 64)
    assert all(a != b for a, b in zip(before, other_base, strict=True))
    bigger = keys_of(project(tmp_path, machine="{memory: 1024}"))
    assert all(a != b for a, b in zip(before, bigger, strict=True))
    later = keys_of(project(tmp_path, extra="checkpoint_ttl: 1h\npolicy: {enabled: false}\n"
                                            "post: [{type: checksum, types: [md5]}]\n"))
    assert later == before


def test_a_changed_secret_invalidates_every_checkpoint(tmp_path: Path):
    """Secrets are masked in the rendered template, so their HMAC (from the fingerprint) is in the root."""
    p = project(tmp_path)
    t1 = load_template(p, environ={})
    t2 = load_template(p, environ={}, cli_vars={"token": "another-secret"})
    k1, k2 = (chain(t, fingerprint(t), "0" * 64, []).keys for t in (t1, t2))
    assert k1[0] != k2[0]


def test_a_host_side_provisioner_is_never_resumed_past(tmp_path: Path):
    p = project(tmp_path, extra="")
    text = p.read_text().replace('  - {type: shell, scripts: [b.sh]}',
                                 '  - {type: shell-local, inline: ["echo on the host"]}')
    p.write_text(text)
    t = load_template(p, environ={})
    assert chain(t, fingerprint(t), "0" * 64, []).resumable == 1


def test_checkpoint_keys_are_not_build_inputs(tmp_path: Path):
    """Turning checkpoints on or changing their TTL must not make --if-changed rebuild."""
    t1 = load_template(project(tmp_path), environ={})
    t2 = load_template(project(tmp_path, extra="checkpoint_ttl: 1h\n"), environ={})
    t2.checkpoints = False
    assert fingerprint(t1).digest == fingerprint(t2).digest


# -- the cache ----------------------------------------------------------------------------------

def qemu_io(path: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for c in commands:
        argv += ["-c", c]
    subprocess.run([*argv, str(path)], check=True, capture_output=True)


def fill(cache: CheckpointCache, base: Path, keys: list[str], upto: int, *, created: float | None = None,
         parent: Layer | None = None, start: int = 1) -> list[Layer]:
    """Save layers start..upto as a build would: each writes its index as a pattern at <index> MiB."""
    pins = Pins()
    try:
        base_name = cache.ensure_base(base, file_digest(base), "qcow2")
        backing = parent.file if parent else base_name
        out = []
        for i in range(start, upto + 1):
            work = cache.start_layer(backing, "qcow2", pins)
            qemu_io(work, f"write -P {i} {i}M 64k")
            lid = cache.new_id(keys[i])
            cache.seal(work, lid)
            layer = cache.publish(Layer(lid, keys[i], backing, "ck", i, f"provision[{i}]",
                                        created if created is not None else time.time(), "", 0))
            out.append(layer)
            backing = layer.file
        return out
    finally:
        pins.release()


KEYS = [f"{i:064x}" for i in range(10)]


@pytest.fixture
def cache(tmp_path: Path) -> CheckpointCache:
    return CheckpointCache(tmp_path / "ckpt")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    p = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(p), "64M"], check=True)
    qemu_io(p, "write -P 170 0 64k")
    return p


def test_layers_chain_by_relative_read_only_names_and_survive_a_moved_cache(tmp_path: Path, cache, base):
    layers = fill(cache, base, KEYS, 3)
    top = cache.root / layers[-1].file
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", str(top)],
                                     check=True, capture_output=True, text=True).stdout)
    assert [i.get("backing-filename") for i in info] == [layers[1].file, layers[0].file,
                                                         f"base-{file_digest(base)}.qcow2", None]
    assert all(i.get("backing-filename-format", "qcow2") == "qcow2" for i in info)
    assert all(os.stat(cache.root / la.file).st_mode & 0o777 == 0o444 for la in layers)
    moved = tmp_path / "moved"
    cache.root.rename(moved)
    qemu_io(moved / layers[-1].file, "read -P 170 0 64k", "read -P 1 1M 64k", "read -P 3 3M 64k")


def test_find_picks_the_deepest_valid_checkpoint(cache, base):
    fill(cache, base, KEYS, 3)
    pins = Pins()
    try:
        r = cache.find(KEYS, deepest=3, ttl=DAY, pins=pins)
        assert r is not None and r.depth == 3 and [la.index for la in r.layers] == [1, 2, 3]
        assert cache.find(KEYS, deepest=2, ttl=DAY, pins=pins).depth == 2  # host-side step after 2
        changed = [*KEYS[:3], "f" * 64]  # provisioner 3 changed
        assert cache.find(changed, deepest=3, ttl=DAY, pins=pins).depth == 2
        assert cache.find(["e" * 64] * 4, deepest=3, ttl=DAY, pins=pins) is None
    finally:
        pins.release()


def test_expired_or_damaged_checkpoints_are_not_resumed(cache, base):
    old = fill(cache, base, KEYS, 2, created=time.time() - 3 * DAY)
    fill(cache, base, KEYS, 3, parent=old[1], start=3)  # a fresh layer on an old chain
    pins = Pins()
    try:
        assert cache.find(KEYS, deepest=3, ttl=7 * DAY, pins=pins).depth == 3
        assert cache.find(KEYS, deepest=3, ttl=2 * DAY, pins=pins) is None  # the chain began 3 days ago
        top = cache.root / cache.find(KEYS, deepest=3, ttl=7 * DAY, pins=pins).top.file
        os.chmod(top, 0o644)
        with open(top, "r+b") as f:
            f.seek(os.path.getsize(top) - 10)
            f.write(b"corruption")
        assert cache.find(KEYS, deepest=3, ttl=7 * DAY, pins=pins).depth == 2
    finally:
        pins.release()


def test_prune_by_age_keeps_layers_that_back_younger_ones(cache, base):
    layers = fill(cache, base, KEYS, 3)
    for la in layers[:2]:
        past = time.time() - 10 * DAY
        os.utime(cache.root / f"{la.id}.json", (past, past))
    assert cache.prune(older_than=DAY) == []  # 1 and 2 are old, but they back 3
    os.utime(cache.root / f"{layers[2].id}.json", (time.time() - 10 * DAY,) * 2)
    removed = {p.name for p in cache.prune(older_than=DAY)}
    assert removed == {la.file for la in layers} | {f"base-{file_digest(base)}.qcow2"}


def test_prune_by_size_removes_least_recently_used_leaves_first(cache, base):
    a = fill(cache, base, KEYS, 2)
    b = fill(cache, base, [k.replace("0", "b") for k in KEYS], 2)
    os.utime(cache.root / f"{b[1].id}.json", (time.time() - DAY,) * 2)  # b's top: least recently used
    total = sum(e.size for e in cache.entries())
    removed = {p.name for p in cache.prune(max_bytes=total - 1)}
    assert removed == {b[1].file}
    removed = {p.name for p in cache.prune(max_bytes=0)}
    assert removed == {a[0].file, a[1].file, b[0].file, f"base-{file_digest(base)}.qcow2"}
    assert cache.entries() == []


def test_prune_never_touches_what_a_build_holds(cache, base):
    layers = fill(cache, base, KEYS, 3)
    (cache.root / f"{layers[2].id}.session").write_text("{}")
    (cache.root / "gone.session").write_text("{}")  # its layer was deleted: an orphan
    pins = Pins()
    work = cache.start_layer(layers[0].file, "qcow2", pins)  # a running build on layer 1
    stale = cache.root / "work-deadbeef.qcow2"  # a killed build's disk: nobody holds it
    stale.write_bytes(b"x")
    try:
        removed = {p.name for p in cache.prune(everything=True)}
        assert removed == {layers[1].file, layers[2].file, stale.name, "gone.session"}
        assert not list(cache.root.glob("*.session"))
        assert work.exists() and (cache.root / layers[0].file).exists()
        entry = next(e for e in cache.entries() if e.layer is not None)
        assert entry.in_use and entry.children == 0
    finally:
        pins.release()
    work.unlink()
    cache.prune(everything=True)
    assert cache.entries() == []


def test_find_pins_its_chain_against_a_concurrent_prune(cache, base):
    fill(cache, base, KEYS, 2)
    pins = Pins()
    r = cache.find(KEYS, deepest=2, ttl=DAY, pins=pins)
    assert r is not None
    try:
        assert cache.prune(everything=True) == []
        assert all(e.in_use for e in cache.entries())
    finally:
        pins.release()
    assert len(cache.prune(everything=True)) == 3


def test_prune_waits_for_the_cache_lock(cache, base):
    fill(cache, base, KEYS, 1)
    done = threading.Event()
    with cache.locked():
        t = threading.Thread(target=lambda: (cache.prune(everything=True), done.set()))
        t.start()
        assert not done.wait(0.5)  # a build is looking up checkpoints: prune waits
    t.join(10)
    assert done.is_set() and cache.entries() == []


# -- the steps ----------------------------------------------------------------------------------

def state_for(path: Path, out: Path, **options) -> BuildState:
    t = load_template(path, environ={})
    base = path.parent / "base.qcow2"
    s = BuildState(template=t, options=BuildOptions(output_dir=out, **options), cancel=threading.Event(),
                   log=logging.getLogger("test"), fingerprint=fingerprint(t))
    s.base_image, s.base_sha256 = base, file_digest(base)
    return s


def test_prepare_resumes_unless_no_checkpoints(tmp_path: Path):
    p = project(tmp_path)
    s = state_for(p, tmp_path / "out")
    names = [Provision(i, pr).name for i, pr in enumerate(s.template.provisioners, 1)]
    keys = chain(s.template, s.fingerprint, s.base_sha256, names).keys
    cache = CheckpointCache()
    first = fill(cache, s.base_image, keys, 2)[0]
    original = generate_build_keys(tmp_path / "first-build")
    save(session_path(cache.root, first.id), original, "baker-first-boot")
    s.work_dir = tmp_path / "work"
    s.work_dir.mkdir()

    step = PrepareCheckpoints(names)
    step.run(s)
    try:
        assert s.checkpoint is not None and s.checkpoint.depth == 2 and s.disk == s.checkpoint.work
        # the guest boots as the same cloud-init instance, with the keys it already trusts
        assert s.instance_id == "baker-first-boot" and s.keys.host_public == original.host_public
        assert s.keys.client_private_path.read_text() == original.client_private_path.read_text()
        assert stat.S_IMODE(s.keys.client_private_path.stat().st_mode) == 0o600
        assert s.checkpoint.skips(2) and not s.checkpoint.skips(3)
        assert [la["index"] for la in s.checkpoint.record()["resumed_from"]] == [1, 2]
    finally:
        step.cleanup(s)
    assert not s.checkpoint.work.exists()

    fresh = state_for(p, tmp_path / "out", ignore_checkpoints=True)
    step.run(fresh)
    try:
        assert fresh.checkpoint is not None and fresh.checkpoint.resume is None
        backing = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(fresh.disk)],
                                            check=True, capture_output=True, text=True).stdout)
        assert backing["backing-filename"].startswith("base-")
        assert backing["virtual-size"] == 8 * 1024**3  # grown to machine.disk_size (default 8G)
    finally:
        step.cleanup(fresh)


def test_plan_has_checkpoint_steps_only_when_asked(tmp_path: Path):
    p = project(tmp_path)
    t = load_template(p, environ={})
    names = [s.name for s in plan_steps(t)]
    assert "checkpoints" in names and "checkpoint-resume" in names
    second = next(n for n in names if n.startswith("provision[2]"))
    assert names.index("checkpoint[2]") == names.index(second) + 1
    t.checkpoints = False
    assert not any(n.startswith("checkpoint") for n in (s.name for s in plan_steps(t)))
    assert {type(s) for s in plan_steps(load_template(p, environ={}))} >= {SaveCheckpoint, WaitAfterResume}


def test_checkpoints_need_the_ssh_communicator(tmp_path: Path):
    from baker.errors import TemplateError

    p = project(tmp_path, extra="communicator: {type: none}\n")
    p.write_text(p.read_text().replace("  - {type: shell, script: a.sh}\n  - {type: shell, scripts: [b.sh]}\n"
                                       '  - {type: shell, inline: ["echo three"]}\n', ""))
    with pytest.raises(TemplateError) as e:
        load_template(p, environ={})
    assert "t.yaml:3:14: checkpoints: checkpoints need the ssh communicator" in str(e.value)


def _iso_template(tmp: Path, *, checkpoints: bool) -> Path:
    """An installer-ISO template; its ISO is a stand-in whose checksum does not match, so a build of it
    stops verifying the download, before any VM starts."""
    (tmp / "install.iso").write_bytes(b"not an installer")
    return write_template(tmp / "iso.yaml", f"""\
name: inst
{"checkpoints: true" if checkpoints else ""}
source:
  iso: {{iso_url: install.iso, iso_checksum: "sha256:{"0" * 64}"}}
  cloud_init: {{enabled: false}}
provisioners:
  - {{type: shell, inline: ["echo one"]}}
""")


def test_checkpoints_true_in_an_iso_template_is_an_error_at_the_key(tmp_path: Path):
    from baker.errors import TemplateError

    with pytest.raises(TemplateError) as e:
        load_template(_iso_template(tmp_path, checkpoints=True), environ={})
    assert "iso.yaml:2:14: checkpoints: checkpoints do not work with an installer ISO source" in str(e.value)
    assert "source: {image: ...}" in str(e.value)  # the hint names the way that works


def test_the_checkpoint_flag_on_an_iso_template_warns_and_plans_no_checkpoint(tmp_path: Path):
    import sys

    from tests.helpers.paths import ROOT

    t = load_template(_iso_template(tmp_path, checkpoints=False), environ={})
    t.checkpoints = True  # what the flag asked for: the plan still has no checkpoint step
    assert not any(s.name.startswith("checkpoint") for s in plan_steps(t))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BAKER_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "baker", "build", "iso.yaml", "--checkpoint", "--json",
                        "--no-store", "-o", "out"], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any(w.startswith("--checkpoint is ignored: checkpoints do not work with an installer ISO source")
               for w in warnings), r.stdout + r.stderr
    failed = [e for e in events if e["event"] == "build_failed"]
    assert failed and failed[0]["step"] == "fetch-source", r.stdout + r.stderr  # the stand-in ISO
    assert not any(e["event"] == "step_start" and e["step"].startswith("checkpoint") for e in events)


def test_a_layer_may_keep_checkpoints(tmp_path: Path):
    """source.image becomes a cloud-image build on the parent's qcow2, so checkpoints work there."""
    project(tmp_path)
    (tmp_path / "t.yaml").rename(tmp_path / "parent.yaml")
    p = write_template(tmp_path / "layer.yaml", """\
name: layer
checkpoints: true
source: {image: parent.yaml}
provisioners: [{type: shell, inline: ["echo layer"]}]
""")
    t = load_template(p, environ={})
    assert t.checkpoints
    assert "checkpoint[1]" in [s.name for s in plan_steps(t)]
