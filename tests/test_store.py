"""The store: immutable versions, content-addressed blobs, channels, revocation, retention, and
concurrent writers in real processes."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from baker.store import Store, StoreError
from baker.store.record import record_dir
from tests.helpers.lifecycle import image_dir


def record(store_root: Path, tmp: Path, version: str, base: str | None = None, **kw) -> None:
    folder = image_dir(tmp / f"img-{version}", version=version, **kw)
    record_dir(store_root, "img", version, folder, json.loads((folder / "manifest.json").read_text()),
               base_sha256=base)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_record_stores_read_only_blobs_once(store: Store, tmp_path: Path) -> None:
    record(store.root, tmp_path, "1.0")
    record(store.root, tmp_path, "1.1")  # same disk bytes: one blob
    v = store.get("img", "1.0")
    disk = v.file("img.qcow2")
    assert disk is not None and disk.role == "artifact"
    assert {f.role for f in v.files} == {"artifact", "metadata"}
    blob = store.blob_path(disk)
    assert blob.stat().st_mode & 0o777 == 0o444
    assert blob.stat().st_nlink == 1  # a copy (or reflink), never a hard link to the output dir
    assert len([b for b in store.blobs.all() if b == disk.sha256]) == 1
    assert v.policy_passed is True and not v.signed
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_versions_are_unique_per_name(store: Store, tmp_path: Path) -> None:
    record(store.root, tmp_path, "1.0")
    with pytest.raises(StoreError, match="already in the store"):
        record(store.root, tmp_path / "again", "1.0")


def test_bad_input(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="needs a name and a version"):
        store.record("img", "", [], {})
    f = tmp_path / "f"
    f.write_text("x")
    for rel, role in (("../escape", "metadata"), ("/abs", "metadata"), ("ok", "weird")):
        with pytest.raises(StoreError, match="bad stored file entry"):
            store.record("img", "1", [(f, rel, role)], {})
    with pytest.raises(StoreError, match="no version '9' of 'img'"):
        store.get("img", "9")
    with pytest.raises(StoreError, match="--keep must be 0 or more"):
        store.gc(-1)
    record(store.root, tmp_path, "1.0")
    with pytest.raises(StoreError, match="needs a --reason"):
        store.revoke("img", "1.0", " ")
    with pytest.raises(StoreError, match="unknown state"):
        store.set_state("img", "1.0", "retired")
    with pytest.raises(StoreError, match="part of the immutable version"):
        store.attach("img", "1.0", [(f, "img.qcow2")])


def test_latest_skips_deprecated_revoked_and_excluded(store: Store, tmp_path: Path) -> None:
    for v in ("1", "2", "3", "4"):
        record(store.root, tmp_path, v)
    assert store.latest("img").version == "4"
    store.set_exclude_from_latest("img", "4", True)
    assert store.latest("img").version == "3"
    store.revoke("img", "3", "broken")
    assert store.latest("img").version == "2"
    store.set_state("img", "2", "deprecated", replacement="1")
    assert store.resolve("img", "latest").version == "1"
    assert store.get("img", "2").replacement == "1"


def test_channels_history_and_rollback(store: Store, tmp_path: Path) -> None:
    for v in ("1", "2", "3"):
        record(store.root, tmp_path, v)
    with pytest.raises(StoreError, match="points nowhere"):
        store.rollback_target("img", "prod")
    assert store.set_channel("img", "prod", "1") is None
    assert store.set_channel("img", "prod", "2") == "1"
    assert store.rollback_target("img", "prod") == "1"
    store.set_channel("img", "prod", "3")
    store.revoke("img", "2", "bad")
    assert store.rollback_target("img", "prod") == "1"  # skips the revoked 2
    moves = store.history("img", "prod")
    assert [(m.version, m.previous) for m in moves] == [("1", None), ("2", "1"), ("3", "2")]
    assert all(m.user and m.at.endswith("Z") for m in moves)


def test_revoke_marks_children_stale_or_cascades(store: Store, tmp_path: Path) -> None:
    import hashlib

    record(store.root, tmp_path, "1", disk=b"parent disk")
    parent_disk = hashlib.sha256(b"parent disk").hexdigest()
    record(store.root, tmp_path, "2", disk=b"child disk", base=parent_disk)
    record(store.root, tmp_path, "3", disk=b"grandchild", base=hashlib.sha256(b"child disk").hexdigest())
    child = store.get("img", "2")
    assert (child.parent_name, child.parent_version) == ("img", "1")
    assert [c.version for c in store.children("img", "1")] == ["2"]
    store.db.execute("UPDATE versions SET stale_reason = NULL")
    record(store.root, tmp_path, "1b", disk=b"parent disk v2")  # a new version of the parent name
    assert store.get("img", "2").stale_reason == "parent img has a newer version 1b"
    store.db.execute("UPDATE versions SET stale_reason = NULL")
    store.revoke("img", "1", "bad kernel")
    assert store.get("img", "2").stale_reason == "parent img@1 revoked" and not store.get("img", "2").revoked
    done = store.revoke("img", "2", "rebuilt elsewhere", cascade=True)
    assert [v.version for v in done] == ["2", "3"]
    assert store.get("img", "3").revoked_reason == "parent img@2 revoked: rebuilt elsewhere"


def test_gc_keeps_channel_targets_and_the_last_good_version(store: Store, tmp_path: Path) -> None:
    record(store.root, tmp_path, "1", disk=b"one")
    record(store.root, tmp_path, "2", disk=b"two")
    record(store.root, tmp_path, "3", disk=b"three", policy_passed=False)
    record(store.root, tmp_path, "4", disk=b"four", policy_passed=False)
    store.set_channel("img", "prod", "1")
    dry = store.gc(1, dry_run=True)
    assert dry.removed_versions == ["img@3"] and store.find("img", "3") is not None
    r = store.gc(1)
    assert r.removed_versions == ["img@3"]
    assert r.kept == {"img@1": "channel prod", "img@2": "last good version", "img@4": "among the newest 1"}
    assert r.removed_blobs == 4  # its disk, SHA256SUMS, manifest, provenance; sbom and policy are shared
    for v in store.versions("img"):  # every kept version still has all its blobs
        assert all(store.blob_path(f).is_file() for f in v.files)
    assert store.gc(0).removed_versions == ["img@4"]  # keep 0: only channel targets and last good


def _writer(root: str, folder: str, version: str, queue) -> None:
    try:
        record_dir(Path(root), "img", version, Path(folder), json.loads((Path(folder) / "manifest.json")
                                                                         .read_text()))
        queue.put((version, "ok"))
    except StoreError as e:
        queue.put((version, f"error: {e.message}"))


def _reader(root: str, stop, queue) -> None:
    s = Store(Path(root))
    seen = 0
    while not stop.is_set():
        for v in s.versions("img"):
            assert all(f.sha256 for f in v.files)
        seen += 1
    queue.put(("reader", seen))


def _collector(root: str, stop, queue) -> None:
    s = Store(Path(root))
    runs = 0
    while not stop.is_set():
        s.gc(100)
        runs += 1
    queue.put(("gc", runs))


def test_concurrent_writers_readers_and_gc_in_real_processes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    shared = os.urandom(1 << 20)
    folders = {}
    for i in range(8):  # eight builds finishing at once; two of them claim the same version
        version = "dup" if i in (6, 7) else f"1.{i}"
        folders[i] = (image_dir(tmp_path / f"b{i}", version=version, disk=shared + bytes([i])), version)
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    helpers = [ctx.Process(target=_reader, args=(str(root), stop, queue)),
               ctx.Process(target=_collector, args=(str(root), stop, queue))]
    Store(root).db  # noqa: B018 - create the catalog first, as the first build would
    for p in helpers:
        p.start()
    writers = [ctx.Process(target=_writer, args=(str(root), str(f), v, queue)) for f, v in folders.values()]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    for p in helpers:
        p.join(120)
    results = [queue.get(timeout=10) for _ in range(len(writers) + len(helpers))]
    assert all(p.exitcode == 0 for p in writers + helpers), results
    outcome = dict(r for r in results if r[0] not in ("reader", "gc"))
    assert [outcome[f"1.{i}"] for i in range(6)] == ["ok"] * 6
    dup = [r[1] for r in results if r[0] == "dup"]
    assert sorted(d.split(":")[0] for d in dup) == ["error", "ok"], dup
    s = Store(root)
    assert s.integrity_errors() == []
    assert len(s.versions("img")) == 7
    for v in s.versions("img"):
        for f in v.files:
            from baker.fsutil import file_digest

            assert file_digest(s.blob_path(f)) == f.sha256


def test_repeated_rollbacks_keep_going_back(store: Store, tmp_path: Path) -> None:
    for v in ("1", "2", "3"):
        record(store.root, tmp_path, v)
        store.set_channel("img", "prod", v)
    for want in ("2", "1"):
        target = store.rollback_target("img", "prod")
        assert target == want
        store.set_channel("img", "prod", target, action="rollback")
    with pytest.raises(StoreError, match="no earlier, non-revoked version"):
        store.rollback_target("img", "prod")
